/* SPDX-License-Identifier: MIT */
/*
 * config.h - the daemon's configuration, read from a libconfig file. config_load() parses
 * and validates everything that can be checked without touching the file system;
 * config_check_paths() checks the paths (watched folders exist, outputs writable, watermark
 * images readable and of a supported format) and is what --check-config and start-up run
 * after it. Errors name the file, the line and the
 * problem: "/etc/imgd/imgd.conf:12: pipeline 'avatar': variant 'small': mask = \"circle\"
 * needs a format with alpha (webp, png, avif, gif), not jpeg".
 *
 * A struct config is immutable once loaded; a reload builds a new one.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "shared/health.h"
#include "shared/time-util.h"
#include "shared/variant.h"

#define CONFIG_DEFAULT_PATH "/etc/imgd/imgd.conf"
#define CONFIG_DEFAULT_STATE_DIR "/var/lib/imgd"
#define CONFIG_DEFAULT_SOCKET "/run/imgd/imgd.sock"
/* The operators' group of the control socket when control_group is not set, if it exists. */
#define CONFIG_DEFAULT_CONTROL_GROUP "imgd"

struct pipeline {
        char *name;
        struct variant *variants;
        size_t n_variants;
        bool placeholder; /* also compute a BlurHash, dominant colour and tiny data URI */
};

/* What happens to a source's outputs when the source is deleted or moved out of its watched
 * folder (issue 17). */
enum watch_on_delete {
        WATCH_ON_DELETE_KEEP,    /* they stay (the default: some applications delete uploads
                                  * once processed and still serve the variants) */
        WATCH_ON_DELETE_RETRACT, /* removed with the manifest; renames within the tree move them */
        _WATCH_ON_DELETE_MAX,
};
const char *watch_on_delete_name(enum watch_on_delete d);
int watch_on_delete_from_name(const char *name); /* the enum value, or -EINVAL */

struct watch_config {
        char *path;   /* absolute, no trailing slash */
        char *output; /* absolute, no trailing slash */
        char *pipeline_name;
        const struct pipeline *pipeline; /* points into config.pipelines */
        bool recursive;
        bool reconcile;   /* outputs kept in step with the pipeline (issue 17) */
        char *quarantine; /* dead sources are moved here; NULL: left in place */
        enum watch_on_delete on_delete;
        char *on_done, *on_dead;  /* hook programs; NULL: none */
        char *on_retract;         /* hook program run when outputs are retracted or moved */
        usec_t hook_timeout_usec; /* hook_timeout, written in seconds; default 30 s */
        int line;                 /* where it was defined, for messages */
};

struct config_limits {
        uint64_t max_file_bytes;  /* sources larger than this are refused; default 256 MiB */
        uint64_t max_pixels;      /* default 100 000 000 */
        usec_t job_timeout_usec;  /* job_timeout (seconds): limit of one render; default 120 s */
        uint64_t worker_memory;   /* resident bytes a worker may use; default 1 GiB */
        unsigned worker_max_jobs; /* jobs before a worker is replaced; default 2000 */
        bool allow_hardlinks;     /* take sources with st_nlink > 1; default false */
        bool allow_heif;          /* decode HEIF/AVIF sources; default true */
        double background_share;  /* of the workers for background work while live work
                                   * comes (issue 17); default 0.5 */
};

struct config_breaker {
        unsigned output_failures;    /* consecutive output failures that open it; default 3 */
        double worker_failure_rate;  /* over the window; default 0.5 */
        unsigned worker_min_samples; /* default 10 */
        usec_t window_usec;          /* window_ms; default 60 s */
        usec_t cooldown_usec;        /* cooldown_ms; default 30 s, doubling per failed probe */
        usec_t max_cooldown_usec;    /* max_cooldown_ms; default 600 s */
};

struct config_retry {
        unsigned max_attempts;  /* default 5 */
        usec_t base_delay_usec; /* base_delay_ms; default 1 s */
        usec_t max_delay_usec;  /* max_delay_ms; default 300 s */
        double jitter;          /* 0..1, default 0.2 */
};

/*
 * http = { listen = "127.0.0.1:9118"; health_alerts = [ "breaker", "paused" ]; }; (http.h).
 * listen is "IPV4:PORT", "[IPV6]:PORT" (numeric, no name lookup; port 0: any free one) or an
 * absolute Unix socket path; a socket passed by systemd (named "http") wins over it.
 */
#define CONFIG_HTTP_PAUSED (1u << _HEALTH_ALERT_MAX) /* "paused" in health_alerts */
struct config_http {
        char *listen;                 /* as written; NULL: no address of its own */
        struct sockaddr_storage addr; /* listen, parsed (AF_INET, AF_INET6 or AF_UNIX) */
        socklen_t addr_len;           /* 0 when listen is NULL */
        int line;                     /* where listen was set, for messages */
        /* What makes GET /health answer 503: bit (1 << enum health_alert) for each alert
         * counted, CONFIG_HTTP_PAUSED for an operator's pause. Default: every alert. */
        unsigned health_alerts;
};

/*
 * ledger = { engine = "postgresql"; conninfo = "host=db.example dbname=imgd"; node = "web1"; };
 * (daemon/ledger.h). engine "sqlite" (the default) keeps the ledger in <state_dir>/imgd.db;
 * "postgresql" in the database that conninfo (libpq's connection string, with libpq's
 * environment) names, which several nodes may share. A password never goes in conninfo: it
 * belongs in a password file (~/.pgpass, or PGPASSFILE). node names this imgd among them
 * (lease owners); by default the host name. lease (seconds) is how long a node's claims
 * outlive its last heartbeat.
 */
enum config_ledger_engine {
        CONFIG_LEDGER_SQLITE,
        CONFIG_LEDGER_POSTGRESQL,
        _CONFIG_LEDGER_ENGINE_MAX,
};
const char *config_ledger_engine_name(int e);

struct config_ledger {
        int engine;     /* enum config_ledger_engine */
        char *conninfo; /* postgresql: NULL until set (required) */
        char *node;     /* NULL: the host name */
        /* postgresql: a claim's lease, renewed by the node's heartbeat every third of it;
         * a node silent for longer loses its running jobs to the others (written in
         * seconds, 3 to 3600; 30 s) */
        usec_t lease_usec;
        int line; /* where the group was written, for messages; 0: not written */
};

/* The heartbeat of a node of a shared ledger: a third of its lease. */
static inline usec_t config_ledger_heartbeat_usec(const struct config_ledger *c)
{
        return c->lease_usec / 3;
}

struct config {
        char *file; /* the file it was loaded from */
        char *state_dir;
        int state_dir_line; /* where state_dir was set, for messages; 0: the default */
        char *socket;
        unsigned workers;      /* default: number of CPUs */
        uint8_t background[3]; /* the top-level `background`, the variants' default; white */
        struct watch_config *watches;
        size_t n_watches;
        struct pipeline *pipelines;
        size_t n_pipelines;
        struct config_limits limits;
        struct config_retry retry;
        struct config_breaker breaker;
        unsigned prune_after_days; /* finished jobs older than this are pruned; 0: never */
        /* Between scans of the folders that could not be watched (written in seconds); 60 s. */
        usec_t unwatched_scan_interval_usec;
        bool degradation;                   /* graceful degradation on; default true */
        struct health_config health;        /* its thresholds (health.h) */
        struct health_alerts_config alerts; /* when status reports an alert (health.h) */
        char *control_group; /* operators' group of the socket; NULL: CONFIG_DEFAULT_CONTROL_GROUP
                              */
        char *read_group;    /* group whose members may send read-only commands; NULL: none */
        struct config_http http;
        struct config_ledger ledger;
};

/*
 * Loads and validates `path`. Returns 0 and a new config in *ret, or a negative errno with
 * a message "FILE:LINE: problem" (or "FILE: problem") in *ret_error, owned by the caller.
 */
int config_load(const char *path, struct config **ret, char **ret_error);

/* This node's name: ledger.node, or the host name (cut to 50 bytes; "imgd" if there is none),
 * in buf. Returns buf. */
const char *config_ledger_node(const struct config *c, char *buf, size_t size);

/* Frees c; accepts NULL; returns NULL. */
struct config *config_free(struct config *c);

/*
 * Checks the paths of a loaded configuration: each watched path exists and is a directory
 * that is not itself a symbolic link (-ELOOP), each output directory exists or can be created
 * and is writable, the state directory can be created, each watermark image is a readable
 * regular file of at most VARIANT_WATERMARK_FILE_MAX bytes whose content is a supported image
 * format.
 *
 * Before creating anything it compares the directories as the file system has them, not as
 * written: symbolic links resolved, and each directory's device and inode (so a bind mount is
 * the same directory as its source). A path that does not exist yet counts as its nearest
 * existing ancestor, resolved, plus the rest. It refuses (-EINVAL) what config_load() refuses
 * by name, when only the resolved paths show it: an output, a quarantine folder or the state
 * directory inside a watched path, a watched path inside an output, a quarantine folder inside
 * an output or containing a watched path, two watches of one directory, and a watched path
 * inside a recursive watch.
 *
 * A control_group or read_group that is set must name an existing group. A folder imgd must
 * write on a read-only file system is refused with what to do under systemd.
 *
 * Creates missing output and state directories. Returns 0, or a negative errno with
 * "FILE:LINE: path: cause" (or "FILE: pipeline 'p': variant 'v': watermark image PATH:
 * cause") in *ret_error.
 */
int config_check_paths(const struct config *c, char **ret_error);

const struct pipeline *config_find_pipeline(const struct config *c, const char *name);
