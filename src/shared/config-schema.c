/* SPDX-License-Identifier: MIT */
/*
 * config-schema.c - every setting of imgd.conf, declared once; see config-private.h.
 *
 * One table per group of the file: each entry gives the setting's name, the kind of its
 * value, its offset in the struct that holds it, the factor between the stored value and the
 * file's unit (microseconds stored, seconds written: USEC_PER_SEC; time-util.h), its range and its
 * default. config_parse_table() (config-parse.c) reads the file's groups from these tables, and
 * confdump.c writes a configuration back from them, in the order of etc/imgd.conf. What one
 * kind cannot say has a small .parse (a setting read its own way) or .check (a rule between
 * settings of a group) here, beside its entry. The settings of pipelines, variants,
 * watermarks and watches are read by config-watch.c and config-variant.c, with their rules;
 * their tables here name what those groups accept and what confdump.c writes.
 *
 * The top level is read in passes: its scalars and groups, then the settings added after
 * them, then the pipelines, then the watches (each watch points into config.pipelines).
 * tests/integration/test-docs.c and test-dumpconfig.c read the names of these tables (the
 * string after each `.name = `) to check that imgd.conf(5) and --dump-config know every
 * setting.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include "shared/config-private.h"
#include "shared/health.h"
#include "shared/macro.h"
#include "shared/time-util.h"
#include "shared/variant.h"

#define JOB_TIMEOUT_MAX 86400
#define RETRY_ATTEMPTS_MAX 100
#define RETRY_DELAY_MAX_MS 86400000LL /* one day */
#define MAX_FILE_BYTES_MIN 1024

static const uint8_t default_background[3] = { 255, 255, 255 };

/* ---- What a kind cannot say: the .parse and .check functions of some settings */

static unsigned default_workers(void)
{
        long n = sysconf(_SC_NPROCESSORS_ONLN);

        if (n < 1)
                return 1;
        if (n > CONFIG_WORKERS_MAX)
                return CONFIG_WORKERS_MAX;
        return (unsigned)n;
}

/* workers: in [min, max]; by default the number of CPUs. */
static int parse_workers(struct parser *p, const config_setting_t *root,
                         const struct config_setting *e, const char *prefix, void *base)
{
        struct config *c = base;
        long long workers = 0;
        int r;

        r = config_get_int_range(p, root, e->name, prefix, e->min, e->max, &workers);
        if (r < 0)
                return r;
        c->workers = r > 0 ? (unsigned)workers : default_workers();
        return 0;
}

/* state_dir: a normalised absolute directory, and the line it was set on. */
static int parse_state_dir(struct parser *p, const config_setting_t *root,
                           const struct config_setting *e, const char *prefix, void *base)
{
        struct config *c = base;
        int r;

        r = config_get_dir(p, root, e->name, prefix, &c->state_dir);
        if (r < 0)
                return r;
        if (r > 0) {
                const config_setting_t *s = config_setting_get_member(root, e->name);

                c->state_dir_line = (int)config_setting_source_line(s);
        }
        if (r == 0) {
                c->state_dir = strdup(e->def_string);
                if (!c->state_dir)
                        return config_oom(p);
        }
        return 0;
}

/* socket: an absolute file path that fits a sockaddr_un. */
static int parse_socket(struct parser *p, const config_setting_t *root,
                        const struct config_setting *e, const char *prefix, void *base)
{
        const config_setting_t *s = NULL;
        struct config *c = base;
        const char *v = NULL;
        int r;

        r = config_get_string(p, root, e->name, prefix, &s, &v);
        if (r < 0)
                return r;
        if (r == 0)
                v = e->def_string;
        else if (v[0] != '/' || v[strlen(v) - 1] == '/')
                return config_fail(p, s, -EINVAL,
                                   "'socket' must be an absolute file path, not \"%s\"", v);
        else if (strlen(v) >= sizeof(((struct sockaddr_un *)NULL)->sun_path))
                return config_fail(p, s, -EINVAL,
                                   "'socket' path is too long (at most %zu bytes): %s",
                                   sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1, v);
        c->socket = strdup(v);
        if (!c->socket)
                return config_oom(p);
        return 0;
}

/* control_group, read_group: the name of a group (whether it exists: config-paths.c). */
static int parse_group_name(struct parser *p, const config_setting_t *root,
                            const struct config_setting *e, const char *prefix, void *base)
{
        char **ret = (char **)(void *)((char *)base + e->offset);
        const config_setting_t *s = NULL;
        const char *v = NULL;
        int r;

        r = config_get_string(p, root, e->name, prefix, &s, &v);
        if (r <= 0)
                return r;
        if (!*v)
                return config_fail(p, s, -EINVAL, "%s'%s' must name a group", prefix, e->name);
        *ret = strdup(v);
        if (!*ret)
                return config_oom(p);
        return 0;
}

/* After the watches: the state directory outside every watched path, by name. */
static int check_state_dir(struct parser *p, const config_setting_t *root, void *base)
{
        const struct config *c = base;

        for (size_t i = 0; i < c->n_watches; i++)
                if (config_path_is_below_or_equal(c->state_dir, c->watches[i].path))
                        return config_fail(p, config_setting_get_member(root, "state_dir"), -EINVAL,
                                           "state_dir %s is inside watched path %s (line %d); "
                                           "the ledger's files would be picked up as uploads",
                                           c->state_dir, c->watches[i].path, c->watches[i].line);
        return 0;
}

static int check_retry_delays(struct parser *p, const config_setting_t *group, void *base)
{
        const struct config_retry *r = base;

        if (r->max_delay_usec < r->base_delay_usec)
                return config_fail(p, group, -EINVAL,
                                   "retry: 'max_delay_ms' (%" PRIu64 ") must not be less than "
                                   "'base_delay_ms' (%" PRIu64 ")",
                                   r->max_delay_usec / USEC_PER_MSEC,
                                   r->base_delay_usec / USEC_PER_MSEC);
        return 0;
}

static int check_breaker_cooldowns(struct parser *p, const config_setting_t *group, void *base)
{
        const struct config_breaker *b = base;

        if (b->max_cooldown_usec < b->cooldown_usec)
                return config_fail(p, group, -EINVAL,
                                   "breaker: 'max_cooldown_ms' (%" PRIu64 ") must not be less "
                                   "than 'cooldown_ms' (%" PRIu64 ")",
                                   b->max_cooldown_usec / USEC_PER_MSEC,
                                   b->cooldown_usec / USEC_PER_MSEC);
        return 0;
}

/* After the last level: the thresholds as health.c takes them. */
static int check_degradation_levels(struct parser *p, const config_setting_t *group, void *base)
{
        const struct config *c = base;
        health *check = NULL;

        if (health_new(&c->health, &check) < 0)
                return config_fail(p, group, -EINVAL,
                                   "degradation: each threshold must grow from reduced to "
                                   "essential to paused");
        health_free(check);
        return 0;
}

static void degradation_init(void *base)
{
        health_config_init(&((struct config *)base)->health);
}

static void alerts_init(void *base)
{
        health_alerts_config_init(base);
}

/*
 * Parses an HTTP listen address: "IPV4:PORT", "[IPV6]:PORT" (numeric only: no name is looked
 * up) or an absolute Unix socket path. Returns 0 and the address in *ret, *ret_len, or
 * -EINVAL with what is wrong in *ret_why (static text).
 */
static int parse_listen(const char *s, struct sockaddr_storage *ret, socklen_t *ret_len,
                        const char **ret_why)
{
        struct sockaddr_storage ss = {};
        char host[INET6_ADDRSTRLEN + 1];
        const char *colon, *h = s;
        size_t hlen;
        char *end;
        long port;

        if (s[0] == '/') {
                struct sockaddr_un *un = (struct sockaddr_un *)&ss;

                if (strlen(s) >= sizeof un->sun_path) {
                        *ret_why = "the socket path is too long";
                        return -EINVAL;
                }
                un->sun_family = AF_UNIX;
                strcpy(un->sun_path, s);
                *ret = ss;
                *ret_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(s) + 1);
                return 0;
        }
        colon = strrchr(s, ':');
        if (!colon || colon == s) {
                *ret_why = "expected IPV4:PORT, [IPV6]:PORT or an absolute Unix socket path";
                return -EINVAL;
        }
        hlen = (size_t)(colon - s);
        if (s[0] == '[') {
                if (hlen < 2 || s[hlen - 1] != ']') {
                        *ret_why = "an IPv6 address is written in brackets: [::1]:9118";
                        return -EINVAL;
                }
                h = s + 1;
                hlen -= 2;
        }
        if (hlen == 0 || hlen >= sizeof host) {
                *ret_why = "the address is not a numeric IPv4 or IPv6 address";
                return -EINVAL;
        }
        memcpy(host, h, hlen);
        host[hlen] = '\0';
        errno = 0;
        port = strtol(colon + 1, &end, 10);
        if (!colon[1] || *end || errno || port < 0 || port > 65535 || colon[1] == '+' ||
            colon[1] == '-' || colon[1] == ' ') {
                *ret_why = "the port must be a number from 0 to 65535";
                return -EINVAL;
        }
        if (s[0] != '[' && inet_pton(AF_INET, host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
                struct sockaddr_in *in = (struct sockaddr_in *)&ss;

                in->sin_family = AF_INET;
                in->sin_port = htons((uint16_t)port);
                *ret_len = sizeof *in;
        } else if (s[0] == '[' &&
                   inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;

                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons((uint16_t)port);
                *ret_len = sizeof *in6;
        } else {
                *ret_why = s[0] == '[' ? "not a numeric IPv6 address in the brackets"
                                       : "not a numeric IPv4 address (IPv6 goes in brackets: "
                                         "[::1]:9118; names are not looked up)";
                return -EINVAL;
        }
        *ret = ss;
        return 0;
}

/* http.listen: the address, parsed; the line it was set on. */
static int parse_http_listen(struct parser *p, const config_setting_t *group,
                             const struct config_setting *e, const char *prefix, void *base)
{
        struct config_http *h = base;
        const config_setting_t *ls = NULL;
        const char *v = NULL, *why = NULL;
        int r;

        r = config_get_string(p, group, e->name, prefix, &ls, &v);
        if (r <= 0)
                return r;
        if (parse_listen(v, &h->addr, &h->addr_len, &why) < 0)
                return config_fail(p, ls, -EINVAL, "http: listen = \"%s\": %s", v, why);
        h->listen = strdup(v);
        if (!h->listen)
                return config_oom(p);
        h->line = (int)config_setting_source_line(ls);
        return 0;
}

/* http.health_alerts = [ "breaker", "paused" ]: the names of health_alert_name(), "paused". */
static int parse_http_health_alerts(struct parser *p, const config_setting_t *group,
                                    const struct config_setting *e, const char *prefix, void *base)
{
        const config_setting_t *list = config_setting_get_member(group, e->name);
        struct config_http *h = base;

        (void)prefix;
        if (!list)
                return 0;
        if (!config_setting_is_array(list) && !config_setting_is_list(list))
                return config_fail(
                        p, list, -EINVAL,
                        "http: 'health_alerts' must be a list of names: [ \"breaker\" ]");
        h->health_alerts = 0;
        for (int i = 0; i < config_setting_length(list); i++) {
                const config_setting_t *el = config_setting_get_elem(list, (unsigned)i);
                const char *name = config_setting_get_string(el);
                unsigned bit = 0;

                if (name && strcmp(name, "paused") == 0)
                        bit = CONFIG_HTTP_PAUSED;
                for (int a = 0; name && !bit && a < _HEALTH_ALERT_MAX; a++)
                        if (strcmp(name, health_alert_name(a)) == 0)
                                bit = 1u << a;
                if (!bit) {
                        char names[256] = "";

                        for (int a = 0; a < _HEALTH_ALERT_MAX; a++) {
                                strncat(names, health_alert_name(a),
                                        sizeof names - strlen(names) - 1);
                                strncat(names, ", ", sizeof names - strlen(names) - 1);
                        }
                        return config_fail(p, el, -EINVAL,
                                           "http: health_alerts: unknown name %s%s%s (one of "
                                           "%spaused)",
                                           name ? "\"" : "", name ?: "(not a string)",
                                           name ? "\"" : "", names);
                }
                h->health_alerts |= bit;
        }
        return 0;
}

/* ---- The tables, from the innermost group out */

/* The conditions under which a variant's setting applies (variant.h) and is written. */
static bool gravity_applies(const void *base)
{
        return variant_gravity_applies(base);
}

static bool effort_applies(const void *base)
{
        return variant_effort_applies(base);
}

static bool chroma_applies(const void *base)
{
        return variant_chroma_applies(base);
}

static bool auto_applies(const void *base)
{
        return ((const struct variant *)base)->quality_auto;
}

static bool candidates_applies(const void *base)
{
        return variant_candidates_applies(base);
}

static bool watermark_unset(const void *base)
{
        return ((const struct variant *)base)->watermark.kind == VARIANT_WATERMARK_NONE;
}

static bool watermark_image_applies(const void *base)
{
        return ((const struct variant_watermark *)base)->kind == VARIANT_WATERMARK_IMAGE;
}

static bool watermark_text_applies(const void *base)
{
        return ((const struct variant_watermark *)base)->kind == VARIANT_WATERMARK_TEXT;
}

#define S(type, field) offsetof(type, field)
#define WM(field) offsetof(struct variant_watermark, field)

/* watermark = { ... } of a variant (config-variant.c reads it; defaults there). */
const struct config_setting config_schema_watermark[] = {
        { .name = "image",
          .kind = CONFIG_CHARS,
          .offset = WM(image),
          .applies = watermark_image_applies },
        { .name = "text",
          .kind = CONFIG_CHARS,
          .offset = WM(text),
          .applies = watermark_text_applies },
        { .name = "font",
          .kind = CONFIG_CHARS,
          .offset = WM(font),
          .applies = watermark_text_applies },
        { .name = "color",
          .kind = CONFIG_COLOUR,
          .offset = WM(color),
          .applies = watermark_text_applies },
        { .name = "position",
          .kind = CONFIG_ENUM,
          .offset = WM(position),
          .enum_name = config_gravity_name },
        { .name = "margin", .kind = CONFIG_UINT, .offset = WM(margin) },
        { .name = "opacity", .kind = CONFIG_DOUBLE, .offset = WM(opacity) },
        { .name = "width", .kind = CONFIG_DOUBLE, .offset = WM(width), .zero_unset = true },
        {},
};

/* One variant (config-variant.c reads it, with the variant rules; defaults: variant_init()). */
const struct config_setting config_schema_variant[] = {
        { .name = "name", .kind = CONFIG_CHARS, .offset = S(struct variant, name) },
        { .name = "width", .kind = CONFIG_UINT, .offset = S(struct variant, width) },
        { .name = "height", .kind = CONFIG_UINT, .offset = S(struct variant, height) },
        { .name = "fit",
          .kind = CONFIG_ENUM,
          .offset = S(struct variant, fit),
          .enum_name = config_fit_name },
        { .name = "gravity",
          .kind = CONFIG_ENUM,
          .offset = S(struct variant, gravity),
          .enum_name = config_gravity_name,
          .applies = gravity_applies },
        { .name = "format", .kind = CONFIG_FORMAT, .offset = S(struct variant, format) },
        { .name = "quality", .kind = CONFIG_QUALITY, .offset = S(struct variant, quality) },
        { .name = "target",
          .kind = CONFIG_TARGET,
          .offset = S(struct variant, target),
          .applies = auto_applies },
        { .name = "auto_encodes",
          .kind = CONFIG_UINT,
          .offset = S(struct variant, auto_encodes),
          .applies = auto_applies },
        { .name = "candidates",
          .kind = CONFIG_FORMATS,
          .offset = S(struct variant, candidates),
          .applies = candidates_applies },
        { .name = "best_time_limit_ms",
          .kind = CONFIG_U64,
          .offset = S(struct variant, best_time_limit_usec),
          .scale = USEC_PER_MSEC,
          .applies = candidates_applies },
        { .name = "effort",
          .kind = CONFIG_UINT,
          .offset = S(struct variant, effort),
          .applies = effort_applies },
        { .name = "progressive", .kind = CONFIG_BOOL, .offset = S(struct variant, progressive) },
        { .name = "lossless", .kind = CONFIG_BOOL, .offset = S(struct variant, lossless) },
        { .name = "chroma",
          .kind = CONFIG_ENUM,
          .offset = S(struct variant, chroma),
          .enum_name = config_chroma_name,
          .applies = chroma_applies },
        { .name = "keep", .kind = CONFIG_KEEP, .offset = S(struct variant, keep) },
        { .name = "max_bytes",
          .kind = CONFIG_U64,
          .offset = S(struct variant, max_bytes),
          .zero_unset = true },
        { .name = "max_bytes_strict",
          .kind = CONFIG_BOOL,
          .offset = S(struct variant, max_bytes_strict) },
        { .name = "animated", .kind = CONFIG_BOOL, .offset = S(struct variant, animated) },
        { .name = "mask",
          .kind = CONFIG_ENUM,
          .offset = S(struct variant, mask),
          .enum_name = config_mask_name },
        { .name = "background", .kind = CONFIG_COLOUR, .offset = S(struct variant, background) },
        { .name = "essential", .kind = CONFIG_BOOL, .offset = S(struct variant, essential) },
        { .name = "watermark",
          .kind = CONFIG_GROUP,
          .offset = S(struct variant, watermark),
          .unset = watermark_unset,
          .members = config_schema_watermark },
        {},
};

/* A pipeline written as a group (config-watch.c reads it). */
const struct config_setting config_schema_pipeline[] = {
        { .name = "placeholder", .kind = CONFIG_BOOL, .offset = S(struct pipeline, placeholder) },
        { .name = "variants",
          .kind = CONFIG_LIST,
          .offset = S(struct pipeline, variants),
          .count_offset = S(struct pipeline, n_variants),
          .elem_size = sizeof(struct variant),
          .members = config_schema_variant },
        {},
};

/* One watch (config-watch.c reads it). */
const struct config_setting config_schema_watch[] = {
        { .name = "path", .kind = CONFIG_STRING, .offset = S(struct watch_config, path) },
        { .name = "output", .kind = CONFIG_STRING, .offset = S(struct watch_config, output) },
        { .name = "pipeline",
          .kind = CONFIG_STRING,
          .offset = S(struct watch_config, pipeline_name) },
        { .name = "recursive", .kind = CONFIG_BOOL, .offset = S(struct watch_config, recursive) },
        { .name = "reconcile",
          .kind = CONFIG_BOOL,
          .offset = S(struct watch_config, reconcile),
          .def = true },
        { .name = "quarantine",
          .kind = CONFIG_STRING,
          .offset = S(struct watch_config, quarantine) },
        { .name = "on_done", .kind = CONFIG_STRING, .offset = S(struct watch_config, on_done) },
        { .name = "on_dead", .kind = CONFIG_STRING, .offset = S(struct watch_config, on_dead) },
        { .name = "on_delete",
          .kind = CONFIG_ENUM,
          .offset = S(struct watch_config, on_delete),
          .enum_name = config_on_delete_name },
        { .name = "on_retract",
          .kind = CONFIG_STRING,
          .offset = S(struct watch_config, on_retract) },
        { .name = "hook_timeout",
          .kind = CONFIG_U64,
          .offset = S(struct watch_config, hook_timeout_usec),
          .scale = USEC_PER_SEC,
          .min = 1,
          .max = 3600,
          .def = 30 * USEC_PER_SEC },
        {},
};

#define L(field) offsetof(struct config_limits, field)
static const struct config_setting limits_settings[] = {
        { .name = "max_file_bytes",
          .kind = CONFIG_U64,
          .offset = L(max_file_bytes),
          .min = MAX_FILE_BYTES_MIN,
          .max = LLONG_MAX,
          .def = 256ULL * 1024 * 1024 },
        { .name = "max_pixels",
          .kind = CONFIG_U64,
          .offset = L(max_pixels),
          .min = 1,
          .max = LLONG_MAX,
          .def = 100000000ULL },
        { .name = "job_timeout",
          .kind = CONFIG_U64,
          .offset = L(job_timeout_usec),
          .scale = USEC_PER_SEC,
          .min = 1,
          .max = JOB_TIMEOUT_MAX,
          .def = 120 * USEC_PER_SEC },
        /* In MiB: enough for libvips to open a header, at most 1 TiB. */
        { .name = "worker_memory",
          .kind = CONFIG_U64,
          .offset = L(worker_memory),
          .scale = 1024 * 1024,
          .min = 64,
          .max = 1048576,
          .def = 1024ULL << 20 },
        { .name = "worker_max_jobs",
          .kind = CONFIG_UINT,
          .offset = L(worker_max_jobs),
          .min = 0,
          .max = 1000000,
          .def = 2000 },
        { .name = "allow_hardlinks", .kind = CONFIG_BOOL, .offset = L(allow_hardlinks) },
        { .name = "allow_heif", .kind = CONFIG_BOOL, .offset = L(allow_heif), .def = true },
        { .name = "background_share",
          .kind = CONFIG_DOUBLE,
          .offset = L(background_share),
          .max_double = 1.0,
          .range = "above 0 and at most 1",
          .def_double = 0.5 },
        {},
};

#define R(field) offsetof(struct config_retry, field)
static const struct config_setting retry_settings[] = {
        { .name = "max_attempts",
          .kind = CONFIG_UINT,
          .offset = R(max_attempts),
          .min = 1,
          .max = RETRY_ATTEMPTS_MAX,
          .def = 5 },
        { .name = "base_delay_ms",
          .kind = CONFIG_U64,
          .offset = R(base_delay_usec),
          .scale = USEC_PER_MSEC,
          .min = 1,
          .max = RETRY_DELAY_MAX_MS,
          .def = 1000 * USEC_PER_MSEC },
        { .name = "max_delay_ms",
          .kind = CONFIG_U64,
          .offset = R(max_delay_usec),
          .scale = USEC_PER_MSEC,
          .min = 1,
          .max = RETRY_DELAY_MAX_MS,
          .def = 300000 * USEC_PER_MSEC,
          .check = check_retry_delays },
        { .name = "jitter",
          .kind = CONFIG_DOUBLE,
          .offset = R(jitter),
          .max_double = 1.0,
          .zero_ok = true,
          .range = "between 0 and 1",
          .def_double = 0.2 },
        {},
};

#define B(field) offsetof(struct config_breaker, field)
static const struct config_setting breaker_settings[] = {
        { .name = "output_failures",
          .kind = CONFIG_UINT,
          .offset = B(output_failures),
          .min = 1,
          .max = 1000,
          .def = 3 },
        { .name = "worker_failure_rate",
          .kind = CONFIG_DOUBLE,
          .offset = B(worker_failure_rate),
          .max_double = 1.0,
          .range = "above 0 and at most 1",
          .def_double = 0.5 },
        { .name = "worker_min_samples",
          .kind = CONFIG_UINT,
          .offset = B(worker_min_samples),
          .min = 1,
          .max = 256,
          .def = 10 },
        { .name = "window_ms",
          .kind = CONFIG_U64,
          .offset = B(window_usec),
          .scale = USEC_PER_MSEC,
          .min = 1000,
          .max = 86400000,
          .def = 60000 * USEC_PER_MSEC },
        { .name = "cooldown_ms",
          .kind = CONFIG_U64,
          .offset = B(cooldown_usec),
          .scale = USEC_PER_MSEC,
          .min = 10,
          .max = 86400000,
          .def = 30000 * USEC_PER_MSEC },
        { .name = "max_cooldown_ms",
          .kind = CONFIG_U64,
          .offset = B(max_cooldown_usec),
          .scale = USEC_PER_MSEC,
          .min = 10,
          .max = 86400000,
          .def = 600000 * USEC_PER_MSEC,
          .check = check_breaker_cooldowns },
        {},
};

/* One degradation level; offsets from its struct health_thresholds; defaults: health.c. */
#define T(field) offsetof(struct health_thresholds, field)
static const struct config_setting level_settings[] = {
        { .name = "queued", .kind = CONFIG_U64, .offset = T(queued), .min = 1, .max = LLONG_MAX },
        { .name = "oldest_s",
          .kind = CONFIG_U64,
          .offset = T(oldest_age_usec),
          .scale = USEC_PER_SEC,
          .min = 1,
          .max = 86400 * 365 },
        { .name = "memory",
          .kind = CONFIG_DOUBLE,
          .offset = T(memory_pressure),
          .max_double = 1.0,
          .range = "above 0 and at most 1" },
        { .name = "error_rate",
          .kind = CONFIG_DOUBLE,
          .offset = T(error_rate),
          .max_double = 1.0,
          .range = "above 0 and at most 1" },
        {},
};

/* degradation = { ... }: offsets from struct config; defaults of the levels: health.c. */
#define H(field) (offsetof(struct config, health) + offsetof(struct health_config, field))
static const struct config_setting degradation_settings[] = {
        { .name = "enabled",
          .kind = CONFIG_BOOL,
          .offset = S(struct config, degradation),
          .def = true },
        { .name = "recover_ms",
          .kind = CONFIG_U64,
          .offset = H(recover_usec),
          .scale = USEC_PER_MSEC,
          .min = 0,
          .max = 86400000 },
        { .name = "reduced",
          .kind = CONFIG_GROUP,
          .offset = H(reduced),
          .not_group = "reduced: must be a group { queued = ...; }",
          .members = level_settings },
        { .name = "essential",
          .kind = CONFIG_GROUP,
          .offset = H(essential),
          .not_group = "essential: must be a group { queued = ...; }",
          .members = level_settings },
        { .name = "paused",
          .kind = CONFIG_GROUP,
          .offset = H(paused),
          .not_group = "paused: must be a group { queued = ...; }",
          .members = level_settings,
          .check = check_degradation_levels },
        {},
};

/* alerts = { ... }: 0 or false turns one off; defaults: health_alerts_config_init(). */
#define A(field) offsetof(struct health_alerts_config, field)
static const struct config_setting alerts_settings[] = {
        { .name = "error_rate",
          .kind = CONFIG_DOUBLE,
          .offset = A(error_rate),
          .max_double = 1.0,
          .zero_ok = true,
          .range = "from 0 (off) to 1" },
        { .name = "queued", .kind = CONFIG_U64, .offset = A(queued), .min = 0, .max = LLONG_MAX },
        { .name = "oldest_s",
          .kind = CONFIG_U64,
          .offset = A(oldest_usec),
          .scale = USEC_PER_SEC,
          .min = 0,
          .max = 86400 * 365 },
        { .name = "drain_s",
          .kind = CONFIG_U64,
          .offset = A(drain_usec),
          .scale = USEC_PER_SEC,
          .min = 0,
          .max = 86400 * 365 },
        { .name = "breaker", .kind = CONFIG_BOOL, .offset = A(breaker) },
        { .name = "degraded", .kind = CONFIG_BOOL, .offset = A(degraded) },
        {},
};

#define HT(field) offsetof(struct config_http, field)
static const struct config_setting http_settings[] = {
        { .name = "listen",
          .kind = CONFIG_STRING,
          .offset = HT(listen),
          .parse = parse_http_listen },
        { .name = "health_alerts",
          .kind = CONFIG_ALERTS,
          .offset = HT(health_alerts),
          .def = (1u << _HEALTH_ALERT_MAX) - 1, /* every alert */
          .parse = parse_http_health_alerts },
        {},
};

/* ---- ledger = { engine; conninfo; node; lease; } */

static const char *const ledger_engine_table[_CONFIG_LEDGER_ENGINE_MAX] = {
        [CONFIG_LEDGER_SQLITE] = "sqlite",
        [CONFIG_LEDGER_POSTGRESQL] = "postgresql",
};

const char *config_ledger_engine_name(int e)
{
        return e >= 0 && e < _CONFIG_LEDGER_ENGINE_MAX ? ledger_engine_table[e] : NULL;
}

static int parse_ledger_engine(struct parser *p, const config_setting_t *group,
                               const struct config_setting *e, const char *prefix, void *base)
{
        struct config_ledger *c = base;
        const config_setting_t *s = NULL;
        const char *v = NULL;
        int r;

        c->line = (int)config_setting_source_line(group);
        r = config_get_string(p, group, e->name, prefix, &s, &v);
        if (r <= 0)
                return r;
        for (int i = 0; i < _CONFIG_LEDGER_ENGINE_MAX; i++)
                if (strcmp(v, ledger_engine_table[i]) == 0) {
                        c->engine = i;
                        return 0;
                }
        return config_fail(p, s, -EINVAL,
                           "%s'engine' must be \"sqlite\" or \"postgresql\", not "
                           "\"%s\"",
                           prefix, v);
}

/* Whether a libpq connection string carries a password: a password keyword, or a URI's
 * user:password@ (both forms libpq reads, PQconninfoParse()). */
static bool conninfo_has_password(const char *v)
{
        const char *at, *scheme = strstr(v, "://");

        if (scheme &&
            (strncmp(v, "postgresql://", 13) == 0 || strncmp(v, "postgres://", 11) == 0)) {
                at = strchr(scheme + 3, '@');
                if (at && memchr(scheme + 3, ':', (size_t)(at - scheme - 3)))
                        return true;
                return strstr(v, "password=") != NULL;
        }
        for (const char *q = v; (q = strstr(q, "password")); q += 8) {
                const char *after = q + 8;

                if (q != v && !strchr(" \t\n", q[-1]))
                        continue;
                while (*after == ' ' || *after == '\t')
                        after++;
                if (*after == '=')
                        return true;
        }
        return false;
}

static int parse_ledger_conninfo(struct parser *p, const config_setting_t *group,
                                 const struct config_setting *e, const char *prefix, void *base)
{
        struct config_ledger *c = base;
        const config_setting_t *s = NULL;
        const char *v = NULL;
        int r;

        r = config_get_string(p, group, e->name, prefix, &s, &v);
        if (r <= 0)
                return r;
        if (!*v)
                return config_fail(p, s, -EINVAL, "%s'conninfo' must not be empty", prefix);
        /* The configuration is readable by more than imgd, and its settings are printed
         * (--dump-config): a password has no place in it. */
        if (conninfo_has_password(v))
                return config_fail(p, s, -EINVAL,
                                   "%s'conninfo' must not hold a password: put it in a password "
                                   "file (~/.pgpass of the user imgd runs as, or the file "
                                   "PGPASSFILE names)",
                                   prefix);
        c->conninfo = strdup(v);
        return c->conninfo ? 0 : config_oom(p);
}

static int parse_ledger_node(struct parser *p, const config_setting_t *group,
                             const struct config_setting *e, const char *prefix, void *base)
{
        struct config_ledger *c = base;
        const config_setting_t *s = NULL;
        const char *v = NULL;
        int r;

        r = config_get_string(p, group, e->name, prefix, &s, &v);
        if (r <= 0)
                return r;
        if (!*v || strlen(v) > 63 ||
            strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                      "0123456789._-") != strlen(v))
                return config_fail(p, s, -EINVAL,
                                   "%s'node' must be 1 to 63 letters, digits, '.', '_' or '-', "
                                   "not \"%s\"",
                                   prefix, v);
        c->node = strdup(v);
        return c->node ? 0 : config_oom(p);
}

/* After the group: postgresql needs a conninfo, which only postgresql takes. */
static int check_ledger(struct parser *p, const config_setting_t *group, void *base)
{
        const struct config_ledger *c = base;

        if (c->engine == CONFIG_LEDGER_POSTGRESQL && !c->conninfo)
                return config_fail(p, group, -EINVAL,
                                   "ledger: engine = \"postgresql\" needs a 'conninfo' (libpq's "
                                   "connection string, e.g. \"host=db.example dbname=imgd\")");
        if (c->engine != CONFIG_LEDGER_POSTGRESQL && c->conninfo)
                return config_fail(p, config_setting_get_member(group, "conninfo"), -EINVAL,
                                   "ledger: 'conninfo' is for engine = \"postgresql\"");
        return 0;
}

#define LG(field) offsetof(struct config_ledger, field)
static const struct config_setting ledger_settings[] = {
        { .name = "engine",
          .kind = CONFIG_ENUM,
          .offset = LG(engine),
          .enum_name = config_ledger_engine_name,
          .parse = parse_ledger_engine },
        { .name = "conninfo",
          .kind = CONFIG_STRING,
          .offset = LG(conninfo),
          .parse = parse_ledger_conninfo },
        { .name = "node",
          .kind = CONFIG_STRING,
          .offset = LG(node),
          .parse = parse_ledger_node,
          .check = check_ledger },
        /* PostgreSQL: how long a node's claim outlives its last heartbeat (issue 18); the
         * heartbeat comes every third of it. At least 3 s: a heartbeat a second. */
        { .name = "lease",
          .kind = CONFIG_U64,
          .offset = LG(lease_usec),
          .scale = USEC_PER_SEC,
          .min = 3,
          .max = 3600,
          .def = 30 * USEC_PER_SEC },
        {},
};

/* The top level, in the order of etc/imgd.conf; read in the passes .pass says. */
const struct config_setting config_schema[] = {
        { .name = "state_dir",
          .kind = CONFIG_STRING,
          .offset = S(struct config, state_dir),
          .def_string = CONFIG_DEFAULT_STATE_DIR,
          .parse = parse_state_dir },
        { .name = "socket",
          .kind = CONFIG_STRING,
          .offset = S(struct config, socket),
          .def_string = CONFIG_DEFAULT_SOCKET,
          .parse = parse_socket },
        { .name = "workers",
          .kind = CONFIG_UINT,
          .offset = S(struct config, workers),
          .min = 1,
          .max = CONFIG_WORKERS_MAX,
          .parse = parse_workers }, /* default: the number of CPUs */
        { .name = "background",
          .kind = CONFIG_COLOUR,
          .offset = S(struct config, background),
          .def_colour = default_background },
        { .name = "limits",
          .kind = CONFIG_GROUP,
          .offset = S(struct config, limits),
          .not_group = "'limits' must be a group: limits = { ... };",
          .members = limits_settings },
        { .name = "prune_after_days",
          .kind = CONFIG_UINT,
          .offset = S(struct config, prune_after_days),
          .min = 0,
          .max = 36500,
          .def = 30,
          .pass = 1 },
        { .name = "unwatched_scan_interval",
          .kind = CONFIG_U64,
          .offset = S(struct config, unwatched_scan_interval_usec),
          .scale = USEC_PER_SEC,
          .min = 1,
          .max = 86400,
          .def = 60 * USEC_PER_SEC,
          .pass = 1 },
        { .name = "control_group",
          .kind = CONFIG_STRING,
          .offset = S(struct config, control_group),
          .parse = parse_group_name,
          .pass = 1 },
        { .name = "read_group",
          .kind = CONFIG_STRING,
          .offset = S(struct config, read_group),
          .parse = parse_group_name,
          .pass = 1 },
        { .name = "retry",
          .kind = CONFIG_GROUP,
          .offset = S(struct config, retry),
          .not_group = "'retry' must be a group: retry = { ... };",
          .members = retry_settings },
        { .name = "breaker",
          .kind = CONFIG_GROUP,
          .offset = S(struct config, breaker),
          .not_group = "'breaker' must be a group: breaker = { ... };",
          .members = breaker_settings },
        { .name = "degradation",
          .kind = CONFIG_GROUP,
          .offset = 0,
          .not_group = "'degradation' must be a group: degradation = { ... };",
          .init = degradation_init,
          .members = degradation_settings },
        { .name = "alerts",
          .kind = CONFIG_GROUP,
          .offset = S(struct config, alerts),
          .not_group = "'alerts' must be a group: alerts = { ... };",
          .init = alerts_init,
          .members = alerts_settings },
        { .name = "http",
          .kind = CONFIG_GROUP,
          .offset = S(struct config, http),
          .not_group = "'http' must be a group: http = { listen = \"127.0.0.1:9118\"; };",
          .members = http_settings },
        { .name = "ledger",
          .kind = CONFIG_GROUP,
          .offset = S(struct config, ledger),
          .not_group = "'ledger' must be a group: ledger = { engine = \"postgresql\"; ... };",
          .members = ledger_settings },
        { .name = "watch",
          .kind = CONFIG_LIST,
          .offset = S(struct config, watches),
          .count_offset = S(struct config, n_watches),
          .elem_size = sizeof(struct watch_config),
          .members = config_schema_watch,
          .parse = config_parse_watches,
          .check = check_state_dir,
          .pass = 3 },
        { .name = "pipelines",
          .kind = CONFIG_NAMED,
          .offset = S(struct config, pipelines),
          .count_offset = S(struct config, n_pipelines),
          .elem_size = sizeof(struct pipeline),
          .name_offset = S(struct pipeline, name),
          .members = config_schema_pipeline,
          .parse = config_parse_pipelines,
          .pass = 2 },
        {},
};
