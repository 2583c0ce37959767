#define _GNU_SOURCE
#include "csandbox.h"
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/xattr.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>  // the ST_ flags statfs reports too
#include <sys/syscall.h>
#include <sys/wait.h>
#include <linux/close_range.h>
#include <unistd.h>

struct child_args {
    const struct csandbox_config *c;
    int sync_read, err_write;
    int userns;
    int view;  // c->view_ns_fd is a namespace whose root is the prepared view (csandbox_view_namespace)
};

// Child-side failure: report "stage\n<errno>" to the parent (which formats it), then exit. Only
// async-signal-safe calls here: the child of a multithreaded process may not take locks.
static void fail(int fd, const char *stage) {
    int e = errno;
    char buf[200];
    size_t n = 0;
    while (stage[n] && n < 150) { buf[n] = stage[n]; n++; }
    buf[n++] = '\n';
    char digits[12];
    int k = 0;
    do { digits[k++] = (char)('0' + e % 10); e /= 10; } while (e && k < 11);
    while (k) buf[n++] = digits[--k];
    (void)!write(fd, buf, n);
    _exit(127);
}

static int write_text(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n < 0 ? -1 : 0;
}

// Builds dst + path into out (no allocation).
static void join_path(char *out, size_t size, const char *a, const char *b) {
    size_t n = 0;
    for (size_t i = 0; a[i] && n < size - 1; i++) out[n++] = a[i];
    for (size_t i = 0; b[i] && n < size - 1; i++) out[n++] = b[i];
    out[n] = 0;
}

static void mkdirs(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p == '/') { *p = 0; mkdir(path, 0755); *p = '/'; }
    }
    mkdir(path, 0755);
}

// Binds src at dst (made as an empty directory or file), read-only if asked. Returns 0, or -1 with errno set and
// *stage naming what failed. An absent src is skipped.
static int bind(const char *src, const char *dst, int readonly, const char **stage) {
    struct stat st;
    if (stat(src, &st) != 0) return 0;  // absent on this host: skip
    char d[4096];
    strncpy(d, dst, sizeof d - 1);
    d[sizeof d - 1] = 0;
    if (S_ISDIR(st.st_mode)) mkdirs(d);
    else {
        char parent[4096];
        strncpy(parent, dst, sizeof parent - 1);
        parent[sizeof parent - 1] = 0;
        char *slash = strrchr(parent, '/');
        if (slash) { *slash = 0; mkdirs(parent); }
        int fd = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd >= 0) close(fd);
    }
    if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) != 0) { *stage = "bind mount"; return -1; }
    if (readonly && mount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_REC, NULL) != 0) {
        *stage = "read-only remount";
        return -1;
    }
    return 0;
}

// A bind mount takes no flags but MS_REC (mount(2) ignores the rest): the step's own directories are made nosuid and
// nodev afterwards. mount_setattr (Linux 5.12) sets just those two; before it, a remount has to restate the flags the
// mount keeps (a user namespace refuses a remount that would change its locked atime flags).
// What a step's own directories are given by mount_setattr: nosuid, nodev and no propagation from anywhere (an
// open_tree clone keeps the spawner's slave propagation otherwise).
static struct mount_attr step_directory_attr(void) {
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    attr.propagation = MS_PRIVATE;
    return attr;
}

static int nosuid_nodev(const char *path) {
    struct mount_attr attr = step_directory_attr();
    if (syscall(SYS_mount_setattr, AT_FDCWD, path, 0, &attr, sizeof attr) == 0) return 0;
    // Refused (ENOSYS before 5.12; a seccomp profile may answer EPERM): the remount, whose own refusal is final.
    struct statfs sv;  // statfs, not statvfs: a plain system call (this child shares the worker's memory)
    if (statfs(path, &sv) != 0) return -1;
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV;
    if (sv.f_flags & ST_RDONLY) flags |= MS_RDONLY;
    if (sv.f_flags & ST_NOEXEC) flags |= MS_NOEXEC;
    if (sv.f_flags & ST_NOATIME) flags |= MS_NOATIME;
    if (sv.f_flags & ST_NODIRATIME) flags |= MS_NODIRATIME;
    if (sv.f_flags & ST_RELATIME) flags |= MS_RELATIME;
    return mount(NULL, path, NULL, flags, NULL);
}

static int child_main(void *arg) {
    struct child_args *a = arg;
    const struct csandbox_config *c = a->c;
    int err = a->err_write;
    char x;
    if (read(a->sync_read, &x, 1) != 1) _exit(126);  // the parent set up cgroups and id maps
    close(a->sync_read);

    // Signal dispositions the worker ignores (SIGPIPE: Swift ignores it) would be inherited across exec:
    // give the step the defaults and an empty mask.
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < 32; sig++) if (sig != SIGKILL && sig != SIGSTOP) sigaction(sig, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (setsid() < 0) fail(err, "setsid");
    if ((c->flags & CSANDBOX_SHARE_NETNS) && setns(c->netns_fd, CLONE_NEWNET) != 0) fail(err, "join the empty network namespace");

    if (a->view) {
        // The cheap way: the step's namespace is a copy of the view's own (twenty-odd mounts, not the host's
        // tree): nothing to make private, pivot or detach. Its two directories are cloned from this (the
        // spawner's) namespace as detached mounts first, then attached inside.
        int work = (int)syscall(SYS_open_tree, AT_FDCWD, c->workdir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (work < 0) fail(err, "clone the work directory's mount");
        int tmp = (int)syscall(SYS_open_tree, AT_FDCWD, c->tmpdir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (tmp < 0) fail(err, "clone the private /tmp's mount");
        struct mount_attr attr = step_directory_attr();
        if (syscall(SYS_mount_setattr, work, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0
            || syscall(SYS_mount_setattr, tmp, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0)
            fail(err, "make the step's directories nosuid,nodev");
        if (setns(c->view_ns_fd, CLONE_NEWNS) != 0) fail(err, "enter the view's mount namespace");
        if (unshare(CLONE_NEWNS) != 0) fail(err, "copy the view's mount namespace");
        if (syscall(SYS_move_mount, work, "", AT_FDCWD, "/work", MOVE_MOUNT_F_EMPTY_PATH) != 0) fail(err, "attach the work directory");
        if (syscall(SYS_move_mount, tmp, "", AT_FDCWD, "/tmp", MOVE_MOUNT_F_EMPTY_PATH) != 0) fail(err, "attach the private /tmp");
        if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) fail(err, "mount /proc");
        if (chdir("/") != 0) fail(err, "chdir /");
        if (sethostname("step", 4) != 0) fail(err, "sethostname");
    } else if ((c->flags & CSANDBOX_NAMESPACES) && (c->flags & CSANDBOX_PREPARED_ROOT)) {
        // This namespace is a copy of the spawner thread's, where the read-only view is built already. That one
        // follows the host's mounts (slave); this one takes nothing from anywhere (private).
        char p[4096];
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) fail(err, "make mounts private");
        join_path(p, sizeof p, c->rootdir, "/work");
        if (mount(c->workdir, p, NULL, MS_BIND, NULL) != 0) fail(err, "bind the work directory");
        if (nosuid_nodev(p) != 0) fail(err, "make the work directory nosuid,nodev");
        join_path(p, sizeof p, c->rootdir, "/tmp");
        if (mount(c->tmpdir, p, NULL, MS_BIND, NULL) != 0) fail(err, "bind the private /tmp");
        if (nosuid_nodev(p) != 0) fail(err, "make the private /tmp nosuid,nodev");
        join_path(p, sizeof p, c->rootdir, "/proc");
        if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) fail(err, "mount /proc");
        join_path(p, sizeof p, c->rootdir, "/.old");
        if (syscall(SYS_pivot_root, c->rootdir, p) != 0) fail(err, "pivot_root");
        if (chdir("/") != 0) fail(err, "chdir /");
        if (umount2("/.old", MNT_DETACH) != 0) fail(err, "detach the old root");
        if (sethostname("step", 4) != 0) fail(err, "sethostname");
    } else if (c->flags & CSANDBOX_NAMESPACES) {
        char root[4096], p[4096];
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) fail(err, "make mounts private");
        strncpy(root, c->rootdir, sizeof root - 1);
        root[sizeof root - 1] = 0;
        if (mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755") != 0) fail(err, "mount the new root");
        const char *stage = "";
        for (const char *const *b = c->ro_binds; b && *b; b++) {
            join_path(p, sizeof p, root, *b);
            if (bind(*b, p, 1, &stage) != 0) fail(err, stage);
        }
        join_path(p, sizeof p, root, "/work");
        mkdirs(p);
        if (mount(c->workdir, p, NULL, MS_BIND, NULL) != 0) fail(err, "bind the work directory");
        if (nosuid_nodev(p) != 0) fail(err, "make the work directory nosuid,nodev");
        join_path(p, sizeof p, root, "/tmp");
        mkdirs(p);
        if (mount(c->tmpdir, p, NULL, MS_BIND, NULL) != 0) fail(err, "bind the private /tmp");
        if (nosuid_nodev(p) != 0) fail(err, "make the private /tmp nosuid,nodev");
        const char *devs[] = {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom", NULL};
        for (const char **d = devs; *d; d++) {
            join_path(p, sizeof p, root, *d);
            if (bind(*d, p, 0, &stage) != 0) fail(err, stage);
        }
        join_path(p, sizeof p, root, "/proc");
        mkdirs(p);
        if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) fail(err, "mount /proc");
        join_path(p, sizeof p, root, "/.old");
        mkdirs(p);
        if (syscall(SYS_pivot_root, root, p) != 0) fail(err, "pivot_root");
        if (chdir("/") != 0) fail(err, "chdir /");
        if (umount2("/.old", MNT_DETACH) != 0) fail(err, "detach the old root");
        rmdir("/.old");
        // In a user namespace of its own the step's files, and its cgroup's, are the worker's: with a user namespace
        // under it (where it would hold every capability) it could mount its cgroup and write to it. None may be made.
        if (a->userns && write_text("/proc/sys/user/max_user_namespaces", "0") != 0) fail(err, "forbid nested user namespaces");
        if (mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
            fail(err, "make the new root read-only");
        if (sethostname("step", 4) != 0) fail(err, "sethostname");
    }

    struct rlimit r;
    r.rlim_cur = r.rlim_max = 0;
    if (setrlimit(RLIMIT_CORE, &r) != 0) fail(err, "setrlimit(CORE)");
    if (c->rlimit_nofile > 0) { r.rlim_cur = r.rlim_max = c->rlimit_nofile; if (setrlimit(RLIMIT_NOFILE, &r) != 0) fail(err, "setrlimit(NOFILE)"); }
    if (c->rlimit_fsize > 0) { r.rlim_cur = r.rlim_max = c->rlimit_fsize; if (setrlimit(RLIMIT_FSIZE, &r) != 0) fail(err, "setrlimit(FSIZE)"); }

    // Raw system calls, not glibc's setgroups/setgid/setuid: in a multithreaded parent those broadcast the
    // change to every thread under a lock, and in this copy of the process (whose other threads do not exist)
    // that lock can be held forever: the step hung before exec.
    if (!a->userns && geteuid() == 0) {
        if (syscall(SYS_setgroups, 0, NULL) != 0) fail(err, "setgroups");
        if (syscall(SYS_setgid, c->gid) != 0) fail(err, "setgid");
        if (syscall(SYS_setuid, c->uid) != 0) fail(err, "setuid");
    }
    if (c->rlimit_nproc > 0) { r.rlim_cur = r.rlim_max = c->rlimit_nproc; if (setrlimit(RLIMIT_NPROC, &r) != 0) fail(err, "setrlimit(NPROC)"); }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail(err, "no_new_privs");
    // After setuid: changing credentials clears the parent-death signal. The step dies with the worker.
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) fail(err, "prctl(PDEATHSIG)");

    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0) fail(err, "open /dev/null");
    if (dup2(devnull, 0) < 0 || dup2(c->stdout_fd, 1) < 0 || dup2(c->stderr_fd, 2) < 0) fail(err, "dup2");
    // Everything else closes on exec (the error pipe too: it was made close-on-exec, and its closing tells the
    // parent exec worked). One close_range call instead of a thousand fcntl calls (about 0.4 ms per step).
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0)
        for (int fd = 3; fd < 1024; fd++) if (fd != err) fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (chdir((c->flags & CSANDBOX_NAMESPACES) ? "/work" : c->workdir) != 0) fail(err, "chdir to the work directory");
    execve(c->path, c->argv, c->envp);
    fail(err, "exec");
    return 127;
}

pid_t csandbox_spawn(const struct csandbox_config *c, char *error, size_t error_size) {
    int sync[2], errp[2];
    if (pipe2(sync, O_CLOEXEC) != 0) { snprintf(error, error_size, "pipe: %s", strerror(errno)); return -1; }
    if (pipe2(errp, O_CLOEXEC) != 0) {
        snprintf(error, error_size, "pipe: %s", strerror(errno));
        close(sync[0]); close(sync[1]);
        return -1;
    }
    struct child_args args = {c, sync[0], errp[1], 0, 0};
    args.view = (c->flags & CSANDBOX_NAMESPACES) && (c->flags & CSANDBOX_PREPARED_ROOT) && c->view_ns_fd >= 0;
    // CLONE_VM: the child runs on its own stack in the worker's address space until execve replaces it, so no page
    // table is copied (copying and then unmapping the page tables of a 30 MB multithreaded worker was most of its
    // CPU per step). Not CLONE_VFORK: this thread must still write the id maps and cgroups before the child goes
    // on; it waits for the exec on the error pipe instead. The child writes only its own stack: no allocation, no
    // locks, nothing shared (its fd table and signal handlers are its own copies, as without CLONE_FILES and
    // CLONE_SIGHAND).
    int flags = SIGCHLD | ((c->flags & CSANDBOX_COPY_VM) ? 0 : CLONE_VM);
    if (c->flags & CSANDBOX_NAMESPACES) {
        // With a view namespace the child enters it and copies that (a copy of this thread's would be thrown away).
        flags |= CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | (args.view ? 0 : CLONE_NEWNS);
        if (geteuid() != 0) { flags |= CLONE_NEWUSER; args.userns = 1; }
        if (c->flags & CSANDBOX_NEW_NETNS) flags |= CLONE_NEWNET;
    }
    size_t stack_size = 256 * 1024;
    char *stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) { snprintf(error, error_size, "mmap: %s", strerror(errno)); return -1; }
    // All signals blocked across the clone (as glibc's posix_spawn does): a handler of the worker's must never run
    // in the child, on memory it shares. The child resets every disposition, then unblocks.
    sigset_t all, previous;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    pid_t pid = clone(child_main, stack + stack_size, flags, &args);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    close(sync[0]);
    close(errp[1]);
    if (pid < 0) {
        snprintf(error, error_size, "clone: %s", strerror(saved));
        close(sync[1]); close(errp[0]);
        munmap(stack, stack_size);
        return -1;
    }
    char buf[256];
    if (args.userns) {
        // The worker's uid and gid are the only ones mapped, to the step's (65534): the step is no one in its
        // namespace, and its capabilities there (which the child needs for its mounts) are gone at exec, since it is
        // not uid 0. On the host its files are the worker's.
        char map[64];
        const char *stage = NULL;
        snprintf(buf, sizeof buf, "/proc/%d/setgroups", pid);
        int failure = 0;
        if (write_text(buf, "deny") != 0) { stage = "write setgroups"; failure = errno; }
        snprintf(buf, sizeof buf, "/proc/%d/uid_map", pid);
        snprintf(map, sizeof map, "%u %u 1", (unsigned)c->uid, (unsigned)geteuid());
        if (!stage && write_text(buf, map) != 0) { stage = "write uid_map"; failure = errno; }
        snprintf(buf, sizeof buf, "/proc/%d/gid_map", pid);
        snprintf(map, sizeof map, "%u %u 1", (unsigned)c->gid, (unsigned)getegid());
        if (!stage && write_text(buf, map) != 0) { stage = "write gid_map"; failure = errno; }
        if (stage) {
            snprintf(error, error_size, "%s: %s", stage, strerror(failure));
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            close(sync[1]); close(errp[0]);
            munmap(stack, stack_size);
            return -1;
        }
    }
    char pidtext[32];
    int len = snprintf(pidtext, sizeof pidtext, "%d", pid);
    for (int i = 0; i < c->cgroup_count; i++) {
        if (pwrite(c->cgroup_procs_fds[i], pidtext, len, 0) < 0 && write(c->cgroup_procs_fds[i], pidtext, len) < 0) {
            snprintf(error, error_size, "join cgroup: %s", strerror(errno));
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            close(sync[1]); close(errp[0]);
            munmap(stack, stack_size);
            return -1;
        }
    }
    (void)!write(sync[1], "x", 1);
    close(sync[1]);
    // The child reports a failure, or its exec closes the pipe. A child that does neither within 10 s is
    // stuck before exec: kill it rather than hang the worker.
    struct pollfd pfd = {errp[0], POLLIN, 0};
    int ready;
    do { ready = poll(&pfd, 1, 10000); } while (ready < 0 && errno == EINTR);
    if (ready == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(errp[0]);
        munmap(stack, stack_size);
        snprintf(error, error_size, "the sandboxed child did not reach exec within 10 s");
        return -1;
    }
    ssize_t n = read(errp[0], buf, sizeof buf - 1);
    close(errp[0]);
    munmap(stack, stack_size);  // the child has exec'd or died: its stack is no longer in use
    if (n > 0) {
        buf[n] = 0;
        char *nl = strchr(buf, '\n');
        int code = 0;
        if (nl) { *nl = 0; code = atoi(nl + 1); }
        snprintf(error, error_size, "%s: %s", buf, strerror(code));
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

// The host's mount namespace (opened before the first unshare) and how many fresh copies of it this thread made.
static __thread int host_namespace = -1;
static __thread int namespace_generation = 0;

int csandbox_namespace_generation(void) { return namespace_generation; }

int csandbox_prepare_root(const char *rootdir, const char *const *ro_binds, int fresh, char *error, size_t error_size) {
    if (fresh || namespace_generation == 0) {
        // A new copy of the host's mounts as they are now (unshare takes CLONE_FS with it: this thread's cwd and
        // root become its own). From the second time on, go back to the host's namespace first: a copy made from
        // this thread's namespace would keep its old snapshot (host mounts made since do not reach it when they
        // are not shared, as in most containers).
        if (host_namespace < 0) {
            host_namespace = open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC);
            if (host_namespace < 0) { snprintf(error, error_size, "open the mount namespace: %s", strerror(errno)); return -1; }
        } else if (setns(host_namespace, CLONE_NEWNS) != 0) {
            snprintf(error, error_size, "setns to the host's mount namespace: %s", strerror(errno));
            return -1;
        }
        if (unshare(CLONE_NEWNS) != 0) { snprintf(error, error_size, "unshare(CLONE_NEWNS): %s", strerror(errno)); return -1; }
        // Slave: nothing made here goes back to the host (and shared host mounts still arrive).
        if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) != 0) {
            snprintf(error, error_size, "make mounts slaves: %s", strerror(errno));
            return -1;
        }
        namespace_generation++;
    }
    char root[4096], p[4096];
    strncpy(root, rootdir, sizeof root - 1);
    root[sizeof root - 1] = 0;
    umount2(root, MNT_DETACH);  // an earlier view, if any: steps running with it keep their copies
    if (mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=16m,mode=0755") != 0) {
        snprintf(error, error_size, "mount the new root: %s", strerror(errno));
        return -1;
    }
    const char *stage = "";
    int failed = 0;
    for (const char *const *b = ro_binds; b && *b && !failed; b++) {
        join_path(p, sizeof p, root, *b);
        failed = bind(*b, p, 1, &stage);
    }
    const char *devs[] = {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom", NULL};
    for (const char **d = devs; *d && !failed; d++) {
        join_path(p, sizeof p, root, *d);
        failed = bind(*d, p, 0, &stage);
    }
    const char *dirs[] = {"/work", "/tmp", "/proc", "/.old", NULL};
    for (const char **d = dirs; *d && !failed; d++) {
        join_path(p, sizeof p, root, *d);
        mkdirs(p);
    }
    if (!failed && mount(NULL, root, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0) {
        stage = "make the new root read-only";
        failed = -1;
    }
    if (failed) {
        snprintf(error, error_size, "%s: %s", stage, strerror(errno));
        umount2(root, MNT_DETACH);
        return -1;
    }
    return 0;
}

int csandbox_view_namespace(const char *rootdir, char *error, size_t error_size) {
    // The calling thread's namespace, to come back to.
    int home = open("/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (home < 0) { snprintf(error, error_size, "open the mount namespace: %s", strerror(errno)); return -1; }
    const char *stage = NULL;
    int view = -1, saved = 0;
    char old[4096];
    join_path(old, sizeof old, rootdir, "/.old");
    // The detached mounts steps attach need Linux 5.12: found out here, once, not at a step.
    int probe = (int)syscall(SYS_open_tree, AT_FDCWD, rootdir, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    struct mount_attr attr = step_directory_attr();
    if (probe < 0) stage = "open_tree";
    else if (syscall(SYS_mount_setattr, probe, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) stage = "mount_setattr";
    if (stage) saved = errno;
    if (probe >= 0) close(probe);
    if (stage) { close(home); snprintf(error, error_size, "%s: %s", stage, strerror(saved)); return -1; }
    // A copy of this namespace, made private (pivot_root refuses shared mounts), turned around on the view, and
    // the host's tree (now under /.old) detached from it: what is left is the view alone.
    if (unshare(CLONE_NEWNS) != 0) stage = "unshare(CLONE_NEWNS)";
    else if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) stage = "make mounts private";
    else if (syscall(SYS_pivot_root, rootdir, old) != 0) stage = "pivot_root";
    else {
        if (chdir("/") != 0) stage = "chdir /";
        else if ((view = open("/.old/proc/thread-self/ns/mnt", O_RDONLY | O_CLOEXEC)) < 0) stage = "open the view's namespace";
        if (umount2("/.old", MNT_DETACH) != 0 && !stage) stage = "detach the host's mounts";
    }
    if (stage) saved = errno;
    // Back home (whatever happened above): setns gives this thread that namespace's root and cwd again.
    if (setns(home, CLONE_NEWNS) != 0 && !stage) { stage = "return to the spawner's namespace"; saved = errno; }
    close(home);
    if (stage) {
        if (view >= 0) close(view);
        snprintf(error, error_size, "%s: %s", stage, strerror(saved));
        return -1;
    }
    return view;
}

int csandbox_empty_netns(void) {
    int ready[2], done[2];  // two pipes: one per direction
    if (pipe2(ready, O_CLOEXEC) != 0) return -1;
    if (pipe2(done, O_CLOEXEC) != 0) { close(ready[0]); close(ready[1]); return -1; }
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        char x;
        if (unshare(CLONE_NEWNET) != 0) _exit(1);
        (void)!write(ready[1], "r", 1);
        (void)!read(done[0], &x, 1);  // hold the namespace until the parent opened it
        _exit(0);
    }
    close(ready[1]);
    close(done[0]);
    char x;
    int fd = -1;
    if (read(ready[0], &x, 1) == 1) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/ns/net", pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    (void)!write(done[1], "x", 1);
    close(ready[0]);
    close(done[1]);
    waitpid(pid, NULL, 0);
    return fd;
}

int csandbox_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int csandbox_open_path(const char *path) { return open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC); }

int csandbox_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int csandbox_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int csandbox_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int csandbox_epoll_ctl(int epfd, int op, int fd, unsigned events, unsigned long long token) {
    struct epoll_event e;
    memset(&e, 0, sizeof e);
    e.events = events;
    e.data.u64 = token;
    int o = op == 1 ? EPOLL_CTL_ADD : op == 2 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    return epoll_ctl(epfd, o, fd, &e);
}

int csandbox_epoll_wait(int epfd, unsigned long long *tokens, unsigned *events, int max, int timeout_ms) {
    struct epoll_event e[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, e, max, timeout_ms);
    for (int i = 0; i < n; i++) { tokens[i] = e[i].data.u64; events[i] = e[i].events; }
    return n;
}

int csandbox_set_nonblocking(int fd) {
    int flags = fcntl(fd, F_GETFL);
    return flags < 0 ? -1 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st; (void)ftw;
    return (type == FTW_DP ? rmdir(path) : unlink(path)) == 0 || errno == ENOENT ? 0 : -1;
}

// nftw cannot descend into a directory it may not read (FTW_DNR): such directories are made the owner's again
// (rwx) and counted, so that the next pass goes one level further. Root needs none of this.
static int unreadable_found;
static int open_up(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)ftw;
    if ((type == FTW_DNR || (type == FTW_D && (st->st_mode & 0700) != 0700)) && chmod(path, 0700) == 0) unreadable_found++;
    return 0;
}
static pthread_mutex_t open_up_lock = PTHREAD_MUTEX_INITIALIZER;

int csandbox_clear_acls(const char *path) {
    const char *names[] = {"system.posix_acl_access", "system.posix_acl_default"};
    for (int i = 0; i < 2; i++) {
        if (lremovexattr(path, names[i]) != 0 && errno != ENODATA && errno != ENOTSUP && errno != EOPNOTSUPP) return -1;
    }
    return 0;
}

int csandbox_remove_tree(const char *path) {
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) == 0) return 0;
    // Root reads every directory; and it must not chmod by path what a step still running (--sandbox none) could swap.
    if (errno == ENOENT || geteuid() == 0) return -1;
    // Directories the step made unreadable or unwritable: opened up, a level a pass (at most 64 levels deep).
    pthread_mutex_lock(&open_up_lock);
    for (int pass = 0; pass < 64; pass++) {
        unreadable_found = 0;
        nftw(path, open_up, 16, FTW_PHYS | FTW_MOUNT);
        if (unreadable_found == 0) break;
    }
    pthread_mutex_unlock(&open_up_lock);
    return nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}
