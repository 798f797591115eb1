/* A file-backed stand-in for VMware's libvixDiskLib.so.8, for the project's VDDK tests.
 *
 * Written from the documented VDDK API (vixDiskLib.h): the calls nbdkit's vddk plugin
 * makes, with the documented meaning.  "Remote" disks are local files: a datastore path
 * "[NAME] dir/disk.vmdk" maps to DIR/dir/disk.vmdk where the configuration says
 * "datastore NAME DIR"; a monolithicFlat/vmfs text descriptor is followed to its single
 * flat extent.  Like the real library, it logs in when a disk is opened, so a wrong
 * thumbprint, user, password or VM moref fails VixDiskLib_Open.
 *
 * Configuration: v2vw-vixlib.conf in the libdir given to VixDiskLib_InitEx (else in the
 * parent of the directory the library was loaded from), one "key value" a line:
 *   user U / password P / thumbprint AA:BB:.. / server HOST
 *   vm vm-NN                        (repeatable: the morefs that exist)
 *   datastore NAME DIR              (repeatable)
 *   read_delay_us N                 (every read sleeps: a slow source)
 *   fail_read FIRST-LAST            (sectors: reads touching them fail, error injection)
 *   calllog FILE                    (one line per control call)
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vixabi.h"

#define API __attribute__((visibility("default")))
#define MAX_LIST 16

struct config {
    char user[256], password[256], thumbprint[128], server[256], calllog[4096];
    char vms[MAX_LIST][64];
    int nvms;
    char ds_name[MAX_LIST][128], ds_dir[MAX_LIST][4096];
    int nds;
    long read_delay_us;
    long long fail_first, fail_last;    /* -1: none */
};

struct conn {
    char *vmx, *server, *thumbprint, *user, *password;
};

struct disk {
    int fd;
    VixDiskLibSectorType sectors;
    char path[4096];
};

static struct config cfg;
static int cfg_loaded;
static VixDiskLibGenericLogFunc *log_fn, *warn_fn;

static void emit(VixDiskLibGenericLogFunc *fn, const char *fmt, ...)
{
    va_list ap;
    if (fn == NULL)
        return;
    va_start(ap, fmt);
    fn(fmt, ap);
    va_end(ap);
}

static void calllog(const char *fmt, ...)
{
    FILE *f;
    va_list ap;
    if (cfg.calllog[0] == '\0' || (f = fopen(cfg.calllog, "ae")) == NULL)
        return;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

static void copy(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src);
}

static void config_line(char *line)
{
    char *key = strtok(line, " \t\n"), *val = strtok(NULL, "\n");
    if (key == NULL || key[0] == '#' || val == NULL)
        return;
    while (*val == ' ' || *val == '\t')
        val++;
    if (!strcmp(key, "user")) copy(cfg.user, sizeof cfg.user, val);
    else if (!strcmp(key, "password")) copy(cfg.password, sizeof cfg.password, val);
    else if (!strcmp(key, "thumbprint")) copy(cfg.thumbprint, sizeof cfg.thumbprint, val);
    else if (!strcmp(key, "server")) copy(cfg.server, sizeof cfg.server, val);
    else if (!strcmp(key, "calllog")) copy(cfg.calllog, sizeof cfg.calllog, val);
    else if (!strcmp(key, "read_delay_us")) cfg.read_delay_us = atol(val);
    else if (!strcmp(key, "fail_read"))
        sscanf(val, "%lld-%lld", &cfg.fail_first, &cfg.fail_last);
    else if (!strcmp(key, "vm") && cfg.nvms < MAX_LIST)
        copy(cfg.vms[cfg.nvms++], sizeof cfg.vms[0], val);
    else if (!strcmp(key, "datastore") && cfg.nds < MAX_LIST) {
        char *sp = strchr(val, ' ');
        if (sp != NULL) {
            *sp = '\0';
            copy(cfg.ds_name[cfg.nds], sizeof cfg.ds_name[0], val);
            copy(cfg.ds_dir[cfg.nds], sizeof cfg.ds_dir[0], sp + 1);
            cfg.nds++;
        }
    }
}

/* The configuration is in the libdir the caller passed to InitEx, else found from where
 * the library was loaded (LIBDIR/lib64/ or next to it). */
static void load_config(const char *libdir)
{
    Dl_info info;
    char dir[4096], path[4200], line[4400];
    FILE *f = NULL;
    if (cfg_loaded)
        return;
    cfg_loaded = 1;
    cfg.fail_first = cfg.fail_last = -1;
    if (libdir != NULL) {
        snprintf(path, sizeof path, "%s/v2vw-vixlib.conf", libdir);
        f = fopen(path, "re");
    }
    if (f == NULL && dladdr((void *) load_config, &info) && info.dli_fname != NULL &&
        strchr(info.dli_fname, '/') != NULL) {
        copy(dir, sizeof dir, info.dli_fname);
        copy(dir, sizeof dir, dirname(dir));
        snprintf(path, sizeof path, "%s/../v2vw-vixlib.conf", dir);
        if ((f = fopen(path, "re")) == NULL) {
            snprintf(path, sizeof path, "%s/v2vw-vixlib.conf", dir);
            f = fopen(path, "re");
        }
    }
    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL)
        config_line(line);
    fclose(f);
}

static char *dup0(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* ------------------------------------------------------------ library life */

API VixError VixDiskLib_InitEx(uint32_t major, uint32_t minor, VixDiskLibGenericLogFunc *log,
                               VixDiskLibGenericLogFunc *warn, VixDiskLibGenericLogFunc *panic,
                               const char *libdir, const char *config_file)
{
    load_config(libdir);
    log_fn = log;
    warn_fn = warn;
    calllog("InitEx %u.%u libdir=%s", major, minor, libdir ? libdir : "(null)");
    emit(log_fn, "v2vw-vixlib: file-backed VDDK stand-in initialised (API %u.%u)\n",
         major, minor);
    return VIX_OK;
}

API VixError VixDiskLib_Init(uint32_t major, uint32_t minor, VixDiskLibGenericLogFunc *log,
                             VixDiskLibGenericLogFunc *warn, VixDiskLibGenericLogFunc *panic,
                             const char *libdir)
{
    return VixDiskLib_InitEx(major, minor, log, warn, panic, libdir, NULL);
}

API void VixDiskLib_Exit(void)
{
    calllog("Exit");
}

API char *VixDiskLib_GetErrorText(VixError err, const char *locale)
{
    const char *text;
    switch (err) {
    case VIX_OK: text = "The operation was successful"; break;
    case VIX_E_FAIL: text = "Unknown error"; break;
    case VIX_E_OUT_OF_MEMORY: text = "Memory allocation failed. Out of memory."; break;
    case VIX_E_INVALID_ARG: text = "One of the parameters was invalid"; break;
    case VIX_E_FILE_NOT_FOUND: text = "The file was not found"; break;
    case VIX_E_FILE_READ_ONLY: text = "The file is write-protected"; break;
    case VIX_E_NOT_SUPPORTED: text = "The operation is not supported"; break;
    case VIX_E_CANNOT_CONNECT_TO_HOST: text = "Cannot connect to host"; break;
    default: text = "Unknown error"; break;
    }
    return strdup(text);
}

API void VixDiskLib_FreeErrorText(char *text)
{
    free(text);
}

API const char *VixDiskLib_ListTransportModes(void)
{
    return "file:san:hotadd:nbdssl:nbd";
}

/* ------------------------------------------------------------ connections */

API VixDiskLibConnectParams *VixDiskLib_AllocateConnectParams(void)
{
    return calloc(1, sizeof(VixDiskLibConnectParams));
}

API void VixDiskLib_FreeConnectParams(VixDiskLibConnectParams *params)
{
    free(params);   /* the strings belong to the caller */
}

API VixError VixDiskLib_ConnectEx(const VixDiskLibConnectParams *p, Bool read_only,
                                  const char *snapshot, const char *modes,
                                  void **connection)
{
    struct conn *c;
    load_config(NULL);
    calllog("ConnectEx server=%s vmx=%s ro=%d modes=%s", p->serverName ? p->serverName : "",
            p->vmxSpec ? p->vmxSpec : "", read_only, modes ? modes : "");
    if (cfg.server[0] && (p->serverName == NULL || strcmp(p->serverName, cfg.server)))
        return VIX_E_CANNOT_CONNECT_TO_HOST;
    if ((c = calloc(1, sizeof *c)) == NULL)
        return VIX_E_OUT_OF_MEMORY;
    c->vmx = dup0(p->vmxSpec);
    c->server = dup0(p->serverName);
    c->thumbprint = dup0(p->thumbPrint);
    if (p->credType == 1) {
        c->user = dup0(p->creds.uid.userName);
        c->password = dup0(p->creds.uid.password);
    }
    *connection = c;
    return VIX_OK;
}

API VixError VixDiskLib_Disconnect(void *connection)
{
    struct conn *c = connection;
    calllog("Disconnect");
    if (c == NULL)
        return VIX_OK;
    free(c->vmx); free(c->server); free(c->thumbprint); free(c->user);
    if (c->password)
        explicit_bzero(c->password, strlen(c->password));
    free(c->password);
    free(c);
    return VIX_OK;
}

/* "[NAME] rel/path" -> DIR/rel/path; 0 on success */
static int map_path(const char *vpath, char *out, size_t n)
{
    const char *close = strchr(vpath, ']'), *rel;
    if (vpath[0] != '[' || close == NULL || strstr(vpath, ".."))
        return -1;
    rel = close + 1;
    while (*rel == ' ')
        rel++;
    for (int i = 0; i < cfg.nds; i++) {
        size_t len = strlen(cfg.ds_name[i]);
        if ((size_t) (close - vpath - 1) == len && !strncmp(vpath + 1, cfg.ds_name[i], len)) {
            snprintf(out, n, "%s/%s", cfg.ds_dir[i], rel);
            return 0;
        }
    }
    return -1;
}

/* A VMDK text descriptor names one flat extent: 'RW <sectors> FLAT|VMFS "file" [0]'. */
static int follow_descriptor(struct disk *d)
{
    char head[22], line[4400], dir[4096], name[4096], kind[16];
    unsigned long long sectors;
    FILE *f;
    if (pread(d->fd, head, sizeof head - 1, 0) != (ssize_t) sizeof head - 1)
        return 0;
    head[sizeof head - 1] = '\0';
    if (strcmp(head, "# Disk DescriptorFile") != 0)
        return 0;
    if ((f = fdopen(dup(d->fd), "r")) == NULL)
        return -1;
    name[0] = '\0';
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "RW %llu %15s \"%4095[^\"]\"", &sectors, kind, name) == 3 &&
            (!strcmp(kind, "FLAT") || !strcmp(kind, "VMFS")))
            break;
        else
            name[0] = '\0';
    fclose(f);
    if (name[0] == '\0' || strchr(name, '/'))
        return -1;
    copy(dir, sizeof dir, d->path);
    snprintf(line, sizeof line, "%s/%s", dirname(dir), name);
    close(d->fd);
    if ((d->fd = open(line, O_RDONLY | O_CLOEXEC)) < 0)
        return -1;
    d->sectors = sectors;
    return 0;
}

static int vm_known(const char *vmx)
{
    if (vmx == NULL || strncmp(vmx, "moref=", 6) != 0)
        return 0;
    for (int i = 0; i < cfg.nvms; i++)
        if (!strcmp(vmx + 6, cfg.vms[i]))
            return 1;
    return 0;
}

static VixError login(const struct conn *c)
{
    if (cfg.thumbprint[0] && (c->thumbprint == NULL || strcasecmp(c->thumbprint, cfg.thumbprint)))
        return VIX_E_FAIL;   /* the TLS handshake fails before any login */
    if (c->user == NULL || c->password == NULL || strcmp(c->user, cfg.user) ||
        strcmp(c->password, cfg.password)) {
        emit(warn_fn, "[NFC ERROR] NfcNewAuthdConnectionEx: login to %s as %s failed\n",
             c->server ? c->server : "?", c->user ? c->user : "?");
        return VIX_E_CANNOT_CONNECT_TO_HOST;
    }
    return vm_known(c->vmx) ? VIX_OK : VIX_E_INVALID_ARG;
}

API VixError VixDiskLib_Open(void *connection, const char *vpath, uint32_t flags, void **handle)
{
    struct conn *c = connection;
    struct disk *d;
    struct stat st;
    VixError err = login(c);
    calllog("Open %s flags=%u -> %llu", vpath ? vpath : "", flags, (unsigned long long) err);
    if (err != VIX_OK)
        return err;
    if ((d = calloc(1, sizeof *d)) == NULL)
        return VIX_E_OUT_OF_MEMORY;
    if (vpath == NULL || map_path(vpath, d->path, sizeof d->path) != 0 ||
        (d->fd = open(d->path, O_RDONLY | O_CLOEXEC)) < 0) {
        free(d);
        return VIX_E_FILE_NOT_FOUND;
    }
    if (fstat(d->fd, &st) != 0) {
        close(d->fd);
        free(d);
        return VIX_E_FILE_NOT_FOUND;
    }
    d->sectors = st.st_size / VIXDISKLIB_SECTOR_SIZE;
    if (follow_descriptor(d) != 0) {
        if (d->fd >= 0)
            close(d->fd);
        free(d);
        return VIX_E_FILE_NOT_FOUND;
    }
    *handle = d;
    return VIX_OK;
}

API VixError VixDiskLib_Close(void *handle)
{
    struct disk *d = handle;
    calllog("Close");
    if (d != NULL) {
        close(d->fd);
        free(d);
    }
    return VIX_OK;
}

API const char *VixDiskLib_GetTransportMode(void *handle)
{
    return "nbdssl";
}

API VixError VixDiskLib_GetInfo(void *handle, VixDiskLibInfo **info)
{
    struct disk *d = handle;
    VixDiskLibInfo *i = calloc(1, sizeof *i);
    if (i == NULL)
        return VIX_E_OUT_OF_MEMORY;
    i->capacity = d->sectors;
    i->biosGeo.heads = i->physGeo.heads = 255;
    i->biosGeo.sectors = i->physGeo.sectors = 63;
    i->biosGeo.cylinders = i->physGeo.cylinders = (uint32_t) (d->sectors / (255 * 63));
    i->adapterType = 3;   /* SCSI LSI Logic */
    i->numLinks = 1;
    i->uuid = strdup("60 00 c2 9a 00 00 00 00-00 00 00 00 00 00 00 00");
    i->logicalSectorSize = i->physicalSectorSize = VIXDISKLIB_SECTOR_SIZE;
    *info = i;
    return VIX_OK;
}

API void VixDiskLib_FreeInfo(VixDiskLibInfo *info)
{
    if (info != NULL)
        free(info->uuid);
    free(info);
}

/* ------------------------------------------------------------ data */

API VixError VixDiskLib_Read(void *handle, VixDiskLibSectorType start, VixDiskLibSectorType n,
                             uint8_t *buf)
{
    struct disk *d = handle;
    size_t len = n * VIXDISKLIB_SECTOR_SIZE, done = 0;
    if (cfg.read_delay_us > 0) {
        struct timespec ts = { cfg.read_delay_us / 1000000, (cfg.read_delay_us % 1000000) * 1000 };
        nanosleep(&ts, NULL);
    }
    if (cfg.fail_first >= 0 && (long long) start <= cfg.fail_last &&
        (long long) (start + n) > cfg.fail_first) {
        emit(warn_fn, "[NFC ERROR] NfcFssrvrRecv: read of sector %llu failed\n",
             (unsigned long long) start);
        return VIX_E_CANNOT_CONNECT_TO_HOST;
    }
    if (start + n > d->sectors)
        return VIX_E_INVALID_ARG;
    while (done < len) {
        ssize_t r = pread(d->fd, buf + done, len - done,
                          (off_t) (start * VIXDISKLIB_SECTOR_SIZE + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return VIX_E_FAIL;
        if (r == 0) {   /* a sparse flat file shorter than its descriptor says */
            memset(buf + done, 0, len - done);
            break;
        }
        done += (size_t) r;
    }
    return VIX_OK;
}

API VixError VixDiskLib_Write(void *handle, VixDiskLibSectorType start, VixDiskLibSectorType n,
                              const uint8_t *buf)
{
    return VIX_E_FILE_READ_ONLY;   /* the tests only read: conversions copy from the source */
}

API VixError VixDiskLib_ReadAsync(void *handle, VixDiskLibSectorType start,
                                  VixDiskLibSectorType n, uint8_t *buf,
                                  VixDiskLibCompletionCB cb, void *data)
{
    cb(data, VixDiskLib_Read(handle, start, n, buf));   /* completes before returning */
    return VIX_ASYNC;
}

API VixError VixDiskLib_WriteAsync(void *handle, VixDiskLibSectorType start,
                                   VixDiskLibSectorType n, const uint8_t *buf,
                                   VixDiskLibCompletionCB cb, void *data)
{
    cb(data, VixDiskLib_Write(handle, start, n, buf));
    return VIX_ASYNC;
}

API VixError VixDiskLib_Wait(void *handle)
{
    return VIX_OK;
}

API VixError VixDiskLib_Flush(void *handle)
{
    return VIX_OK;
}

API VixError VixDiskLib_Create(void *connection, const char *path, const void *params,
                               void *progress, void *data)
{
    return VIX_E_NOT_SUPPORTED;
}

/* Allocated chunks from SEEK_DATA/SEEK_HOLE, so readers can skip holes. */
API VixError VixDiskLib_QueryAllocatedBlocks(void *handle, VixDiskLibSectorType start,
                                             VixDiskLibSectorType n, VixDiskLibSectorType chunk,
                                             VixDiskLibBlockList **out)
{
    struct disk *d = handle;
    uint32_t cap = 64, count = 0;
    VixDiskLibSectorType end = start + n;
    off_t pos = (off_t) start * VIXDISKLIB_SECTOR_SIZE, stop = (off_t) end * VIXDISKLIB_SECTOR_SIZE;
    VixDiskLibBlockList *list;
    if (chunk == 0 || start % chunk || n % chunk)
        return VIX_E_INVALID_ARG;
    list = malloc(sizeof *list + cap * sizeof(VixDiskLibBlock));
    if (list == NULL)
        return VIX_E_OUT_OF_MEMORY;
    while (pos < stop) {
        off_t data = lseek(d->fd, pos, SEEK_DATA), hole;
        VixDiskLibSectorType a, b;
        if (data < 0 || data >= stop)
            break;
        hole = lseek(d->fd, data, SEEK_HOLE);
        if (hole < 0 || hole > stop)
            hole = stop;
        a = (VixDiskLibSectorType) data / VIXDISKLIB_SECTOR_SIZE / chunk * chunk;
        b = ((VixDiskLibSectorType) hole / VIXDISKLIB_SECTOR_SIZE + chunk - 1) / chunk * chunk;
        if (b > end)
            b = end;
        if (count > 0 && list->blocks[count - 1].offset + list->blocks[count - 1].length >= a) {
            list->blocks[count - 1].length = b - list->blocks[count - 1].offset;
        } else {
            if (count == cap) {
                VixDiskLibBlockList *bigger;
                cap *= 2;
                bigger = realloc(list, sizeof *list + cap * sizeof(VixDiskLibBlock));
                if (bigger == NULL) {
                    free(list);
                    return VIX_E_OUT_OF_MEMORY;
                }
                list = bigger;
            }
            list->blocks[count].offset = a;
            list->blocks[count].length = b - a;
            count++;
        }
        pos = (off_t) b * VIXDISKLIB_SECTOR_SIZE;
    }
    list->numBlocks = count;
    *out = list;
    return VIX_OK;
}

API VixError VixDiskLib_FreeBlockList(VixDiskLibBlockList *list)
{
    free(list);
    return VIX_OK;
}
