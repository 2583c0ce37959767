#ifndef CSANDBOX_H
#define CSANDBOX_H
// The step spawn, in C: only async-signal-safe code runs between clone() and execve(), which Swift cannot
// guarantee. Swift prepares everything (paths, fds, limits); this file only carries it out.
#include <stddef.h>
#include <sys/types.h>

enum {
    CSANDBOX_NAMESPACES = 1 << 0,   // pid, mount, ipc, uts (+ user when not root)
    CSANDBOX_SHARE_NETNS = 1 << 1,  // join netns_fd (an empty network namespace made once)
    CSANDBOX_COPY_VM = 1 << 2,      // clone without CLONE_VM, copying the page tables: the benchmark's baseline only
    CSANDBOX_PREPARED_ROOT = 1 << 3, // rootdir already holds the read-only view (csandbox_prepare_root on this thread)
    CSANDBOX_NEW_NETNS = 1 << 4,    // a network namespace of the step's own (a worker that is not root cannot join
                                    // the shared one: it holds no capability over it)
};

struct csandbox_config {
    const char *path;            // executable (absolute)
    char *const *argv;
    char *const *envp;
    const char *workdir;         // host path of the private work directory; seen as /work inside
    const char *tmpdir;          // host path of the private /tmp
    const char *rootdir;         // an empty host directory to build the new root on (namespaces only)
    const char *const *ro_binds; // NULL-terminated host paths bound read-only at the same place
    int stdout_fd, stderr_fd;    // write ends; stdin is /dev/null
    int flags;
    int netns_fd;                // with CSANDBOX_SHARE_NETNS
    const int *cgroup_procs_fds; // cgroup.procs files to put the child in (parent writes the pid)
    int cgroup_count;
    uid_t uid; gid_t gid;        // identity of the step: set when the worker is root; when it is not, the ids the
                                 // worker's own uid and gid are mapped to in the step's user namespace
    long rlimit_nofile, rlimit_fsize, rlimit_nproc; // 0 = leave as is
    int view_ns_fd;              // with CSANDBOX_PREPARED_ROOT: csandbox_view_namespace's fd for rootdir, or -1
};

/// Spawns the step. Returns its pid (in the host's pid namespace) or -1 with `error` filled in
/// ("mount /proc: Operation not permitted").
pid_t csandbox_spawn(const struct csandbox_config *config, char *error, size_t error_size);

/// Builds the read-only view of the system at `rootdir` in the calling thread's own mount namespace: a read-only
/// tmpfs holding `ro_binds`, the four devices and empty /work, /tmp, /proc and /.old. Steps cloned from this thread
/// with CSANDBOX_PREPARED_ROOT copy it instead of building it: they only bind their two directories, mount /proc and
/// pivot. `fresh` (and the first call) first makes that namespace a new copy of the host's mounts as they are now,
/// which drops every view built before in this thread (see csandbox_namespace_generation). Root only. Returns 0, or
/// -1 with `error`.
int csandbox_prepare_root(const char *rootdir, const char *const *ro_binds, int fresh, char *error, size_t error_size);

/// After csandbox_prepare_root: a mount namespace holding nothing but the view at `rootdir`, as its root. A step
/// spawned with it (`view_ns_fd`) enters a copy of it instead of copying the spawner's namespace (the host's whole
/// tree, which the step then had to make private and detach: most of the mount work per step). The calling thread
/// stays where it was. Returns the namespace's fd, or -1 with `error` (Linux before 5.12: no detached mounts).
int csandbox_view_namespace(const char *rootdir, char *error, size_t error_size);

/// How many fresh namespaces this thread has made: a view built in an earlier one is gone.
int csandbox_namespace_generation(void);

/// The step reactor's system calls, with epoll_event (packed on x86-64) kept on this side.
int csandbox_pidfd_open(pid_t pid);            // -1 with errno (ENOSYS before Linux 5.3)
int csandbox_eventfd(void);                    // non-blocking, close-on-exec
int csandbox_epoll_create(void);
int csandbox_epoll_ctl(int epfd, int op, int fd, unsigned events, unsigned long long token); // op: 1 add, 2 del, 3 mod
/// Waits up to `timeout_ms`; fills `tokens` and `events` with up to `max` ready entries; returns their number.
int csandbox_epoll_wait(int epfd, unsigned long long *tokens, unsigned *events, int max, int timeout_ms);
int csandbox_set_nonblocking(int fd);

/// Removes a directory tree without following symbolic links or crossing mounts (a step's leftovers), making
/// directories the step left unreadable readable again first (a worker that is not root cannot open them). 0 or -1.
int csandbox_remove_tree(const char *path);

/// Removes a directory's POSIX ACLs (access and default), not following a link. 0, or -1 with errno (ENODATA
/// and ENOTSUP, "there were none", count as success).
int csandbox_clear_acls(const char *path);

/// open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC): a handle on the file itself, not opened for reading or writing and
/// never through a link (Swift's Glibc module does not export O_PATH). -1 with errno.
int csandbox_open_path(const char *path);

/// pipe2(O_CLOEXEC), which Swift's Glibc module does not export.
int csandbox_pipe_cloexec(int fds[2]);

/// Makes an empty network namespace and returns an fd to it (-1 on failure, errno set).
int csandbox_empty_netns(void);

#endif
