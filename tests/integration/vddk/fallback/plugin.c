/* A stand-in nbdkit "vddk" plugin, used by the VDDK tests ONLY when nbdkit's real vddk
 * plugin cannot be had (build.sh says so, and so do the tests).  Written against Debian's
 * nbdkit-plugin.h (API 2) and VMware's documented VDDK calls: it takes the real plugin's
 * parameters, loads LIBDIR/lib64/libvixDiskLib.so.{8,7,6}, and reads one disk read-only
 * through VixDiskLib_ConnectEx/Open/GetInfo/Read.  Its messages are its own. */
#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../vixlib/vixabi.h"

NBDKIT_DLL_PUBLIC int vddk_debug_datapath = 1;   /* set by virt-v2v with -D */
NBDKIT_DLL_PUBLIC int vddk_debug_stats;

static char *libdir, *server, *user, *password, *thumbprint, *vm, *file;
static void *dl;

static VixError (*InitEx)(uint32_t, uint32_t, VixDiskLibGenericLogFunc *,
                          VixDiskLibGenericLogFunc *, VixDiskLibGenericLogFunc *,
                          const char *, const char *);
static char *(*GetErrorText)(VixError, const char *);
static void (*FreeErrorText)(char *);
static VixError (*ConnectEx)(const VixDiskLibConnectParams *, Bool, const char *,
                             const char *, void **);
static VixError (*Open)(void *, const char *, uint32_t, void **);
static VixError (*GetInfo)(void *, VixDiskLibInfo **);
static void (*FreeInfo)(VixDiskLibInfo *);
static VixError (*Read)(void *, VixDiskLibSectorType, VixDiskLibSectorType, uint8_t *);
static VixError (*Close)(void *);
static VixError (*Disconnect)(void *);

struct handle { void *conn, *disk; int64_t size; };

static void log_fn(const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    nbdkit_debug("%s", msg);
}

static void error_fn(const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    nbdkit_error("%s", msg);
}

static void vix_error(const char *call, VixError err)
{
    char *text = GetErrorText(err, NULL);
    nbdkit_error("%s: %s: %s", call, file, text ? text : "?");
    FreeErrorText(text);
}

static int sa_config(const char *key, const char *value)
{
    char **slot = NULL;
    if (!strcmp(key, "libdir")) slot = &libdir;
    else if (!strcmp(key, "server")) slot = &server;
    else if (!strcmp(key, "user")) slot = &user;
    else if (!strcmp(key, "thumbprint")) slot = &thumbprint;
    else if (!strcmp(key, "vm")) slot = &vm;
    else if (!strcmp(key, "file")) slot = &file;
    else if (!strcmp(key, "password")) {
        free(password);
        return nbdkit_read_password(value, &password);
    } else
        return 0;   /* port, transports, config, snapshot...: accepted, not used */
    free(*slot);
    *slot = strdup(value);
    return *slot ? 0 : -1;
}

static int sa_config_complete(void)
{
    if (file == NULL) {
        nbdkit_error("you must supply the file=<FILENAME> parameter");
        return -1;
    }
    return 0;
}

static int load_library(void)
{
    char path[4200];
    static const char *names[] = { "lib64/libvixDiskLib.so.8", "lib64/libvixDiskLib.so.7",
                                   "lib64/libvixDiskLib.so.6" };
    for (size_t i = 0; i < 3 && dl == NULL; i++) {
        snprintf(path, sizeof path, "%s/%s", libdir ? libdir : "/usr/lib/vmware-vix-disklib",
                 names[i]);
        dl = dlopen(path, RTLD_NOW);
    }
    if (dl == NULL) {
        nbdkit_error("%s", dlerror());
        return -1;
    }
#define SYM(v, name) if ((*(void **) &v = dlsym(dl, name)) == NULL) { \
        nbdkit_error("required VDDK symbol \"%s\" is missing", name); return -1; }
    SYM(InitEx, "VixDiskLib_InitEx") SYM(GetErrorText, "VixDiskLib_GetErrorText")
    SYM(FreeErrorText, "VixDiskLib_FreeErrorText") SYM(ConnectEx, "VixDiskLib_ConnectEx")
    SYM(Open, "VixDiskLib_Open") SYM(GetInfo, "VixDiskLib_GetInfo")
    SYM(FreeInfo, "VixDiskLib_FreeInfo") SYM(Read, "VixDiskLib_Read")
    SYM(Close, "VixDiskLib_Close") SYM(Disconnect, "VixDiskLib_Disconnect")
#undef SYM
    return 0;
}

static int sa_get_ready(void)
{
    VixError err;
    if (load_library() != 0)
        return -1;
    err = InitEx(6, 5, log_fn, error_fn, error_fn, libdir, NULL);
    if (err != VIX_OK) {
        vix_error("VixDiskLib_InitEx", err);
        return -1;
    }
    return 0;
}

static void sa_dump_plugin(void)
{
    printf("vddk_standin=1\nvddk_default_libdir=/usr/lib/vmware-vix-disklib\n"
           "vddk_has_nfchostport=1\n");
}

static void *sa_open(int readonly)
{
    VixDiskLibConnectParams params;
    VixDiskLibInfo *info;
    VixError err;
    struct handle *h = calloc(1, sizeof *h);
    char vmx[512];
    if (h == NULL)
        return NULL;
    memset(&params, 0, sizeof params);
    snprintf(vmx, sizeof vmx, "%s", vm ? vm : "");
    params.vmxSpec = vmx;
    params.serverName = server;
    params.thumbPrint = thumbprint;
    params.credType = 1;
    params.creds.uid.userName = user;
    params.creds.uid.password = password;
    if ((err = ConnectEx(&params, 1, NULL, NULL, &h->conn)) != VIX_OK) {
        vix_error("VixDiskLib_ConnectEx", err);
        free(h);
        return NULL;
    }
    if ((err = Open(h->conn, file, VIXDISKLIB_FLAG_OPEN_READ_ONLY, &h->disk)) != VIX_OK ||
        (err = GetInfo(h->disk, &info)) != VIX_OK) {
        vix_error(h->disk ? "VixDiskLib_GetInfo" : "VixDiskLib_Open", err);
        if (h->disk)
            Close(h->disk);
        Disconnect(h->conn);
        free(h);
        return NULL;
    }
    h->size = (int64_t) info->capacity * VIXDISKLIB_SECTOR_SIZE;
    FreeInfo(info);
    return h;
}

static void sa_close(void *handle)
{
    struct handle *h = handle;
    Close(h->disk);
    Disconnect(h->conn);
    free(h);
}

static int64_t sa_get_size(void *handle)
{
    return ((struct handle *) handle)->size;
}

static int sa_pread(void *handle, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
    struct handle *h = handle;
    VixError err;
    if (offset % VIXDISKLIB_SECTOR_SIZE || count % VIXDISKLIB_SECTOR_SIZE) {
        nbdkit_error("read not aligned to 512 bytes (use the blocksize filter)");
        return -1;
    }
    err = Read(h->disk, offset / VIXDISKLIB_SECTOR_SIZE, count / VIXDISKLIB_SECTOR_SIZE, buf);
    if (err != VIX_OK) {
        vix_error("VixDiskLib_Read", err);
        return -1;
    }
    return 0;
}

static int sa_can_write(void *handle)
{
    return 0;
}

#define THREAD_MODEL NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS

static struct nbdkit_plugin plugin = {
    .name = "vddk",
    .longname = "VDDK stand-in plugin (tests only)",
    .version = "0",
    .config = sa_config,
    .config_complete = sa_config_complete,
    .magic_config_key = "file",
    .get_ready = sa_get_ready,
    .dump_plugin = sa_dump_plugin,
    .open = sa_open,
    .close = sa_close,
    .get_size = sa_get_size,
    .can_write = sa_can_write,
    .pread = sa_pread,
};

NBDKIT_REGISTER_PLUGIN(plugin)
