/* The part of VMware's documented VDDK C API (vixDiskLib.h, VDDK 6.5 - 8, x86-64 Linux)
 * that nbdkit's vddk plugin calls, declared for the project's file-backed test library.
 * Layouts follow the documented structures; members the library never reads are kept
 * only so that the sizes and offsets match. */
#ifndef V2VW_VIXABI_H
#define V2VW_VIXABI_H

#include <stdarg.h>
#include <stdint.h>

typedef uint64_t VixError;
typedef uint64_t VixDiskLibSectorType;
typedef char Bool;

enum {                                  /* vix.h codes this library returns */
    VIX_OK = 0,
    VIX_E_FAIL = 1,                     /* "Unknown error": what VDDK says on a bad thumbprint */
    VIX_E_OUT_OF_MEMORY = 2,
    VIX_E_INVALID_ARG = 3,
    VIX_E_FILE_NOT_FOUND = 4,
    VIX_E_NOT_SUPPORTED = 6,
    VIX_E_FILE_READ_ONLY = 5,
    VIX_E_CANNOT_CONNECT_TO_HOST = 18000,
    VIX_ASYNC = 25000,
};

#define VIXDISKLIB_SECTOR_SIZE 512
#define VIXDISKLIB_FLAG_OPEN_READ_ONLY 4

typedef void VixDiskLibGenericLogFunc(const char *fmt, va_list args);
typedef void (*VixDiskLibCompletionCB)(void *data, VixError result);

typedef struct {
    char *vmxSpec;                      /* "moref=vm-NN" */
    char *serverName;
    char *thumbPrint;                   /* "AA:BB:..": SHA-1 of the server's certificate */
    long privateUse;
    int credType;                       /* 1: user name and password */
    union {
        struct { char *userName; char *password; } uid;
        struct { char *cookie; char *userName; char *key; } sessionId;
        void *ticketId;
    } creds;
    uint32_t port;
    uint32_t nfcHostPort;
    char *vimApiVer;
    char reserved[8];
    void *nfcConnection;
    struct { char *id; char *datastoreMoRef; char *ssId; } vStorageObjSpec;
    int specType;
} VixDiskLibConnectParams;

typedef struct { uint32_t cylinders, heads, sectors; } VixDiskLibGeometry;

typedef struct {
    VixDiskLibGeometry biosGeo;
    VixDiskLibGeometry physGeo;
    VixDiskLibSectorType capacity;      /* sectors */
    int adapterType;
    int numLinks;
    char *parentFileNameHint;
    char *uuid;
    uint32_t logicalSectorSize;         /* VDDK 7+ */
    uint32_t physicalSectorSize;
} VixDiskLibInfo;

typedef struct { VixDiskLibSectorType offset, length; } VixDiskLibBlock;
typedef struct { uint32_t numBlocks; VixDiskLibBlock blocks[1]; } VixDiskLibBlockList;

#endif
