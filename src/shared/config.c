/* SPDX-License-Identifier: MIT */
/*
 * config.c - reads and validates the libconfig configuration file; see config.h.
 *
 * config_load() reads the file with libconfig, then walks the tree once: every group is
 * first checked for unknown settings (so a typo is reported as such rather than as a missing
 * value), then each value is type- and range-checked and copied into a struct config that
 * owns all of its memory. Pipelines are read before watches so that each watch's `pipeline`
 * can point into config.pipelines, which is never reallocated afterwards. The first problem
 * found stops the load and is reported as "FILE:LINE: problem", LINE being where the
 * offending setting (or, for a missing one, the enclosing group) was written.
 *
 * Errors: -ENOENT (and other open errors) when the file cannot be read, -EBADMSG for a
 * libconfig syntax error, -EINVAL for everything the validation rejects, -ENOMEM (where the
 * message may be NULL). On success *ret_error is left alone.
 *
 * config_check_paths() is the only function here that touches the file system beyond
 * reading the file: it resolves every configured folder (realpath() of its nearest existing
 * ancestor, and the device and inode of each directory up to "/") and checks again, on what
 * the file system shows, the overlaps config_load() checked by name; only then does it create
 * missing output, state and socket directories, and open each watermark image to check it is
 * there and looks like an image.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <libconfig.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <unistd.h>

#include "shared/config.h"
#include "shared/imgformat.h"
#include "shared/macro.h"
#include "shared/variant.h"

#define WORKERS_MAX 256
#define PIPELINE_VARIANTS_MAX 32
#define JOB_TIMEOUT_MAX 86400
#define RETRY_ATTEMPTS_MAX 100
#define RETRY_DELAY_MAX_MS 86400000LL /* one day */
#define MAX_FILE_BYTES_MIN 1024

static const uint8_t default_background[3] = { 255, 255, 255 };

static inline void config_destroyp(config_t **p)
{
        if (*p)
                config_destroy(*p);
}

static inline void config_freep(struct config **p)
{
        *p = config_free(*p);
}

/* State of one config_load(): the file's name, and the first error found. */
struct parser {
        const char *file;
        char *error;
        uint8_t background[3]; /* top-level default for variants */
};

/*
 * Records "FILE:LINE: message" (or "FILE: message" when s is NULL or has no line) unless an
 * error was already recorded, and returns err. On allocation failure the message is lost and
 * -ENOMEM returned instead.
 */
_printf_(4, 5) static int fail(struct parser *p, const config_setting_t *s, int err,
                               const char *fmt, ...)
{
        _cleanup_free_ char *msg = NULL;
        const char *file = p->file;
        unsigned line = 0;
        va_list ap;
        int r;

        if (p->error)
                return err;

        va_start(ap, fmt);
        r = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (r < 0) {
                msg = NULL;
                return -ENOMEM;
        }

        if (s) {
                line = config_setting_source_line(s);
                if (config_setting_source_file(s))
                        file = config_setting_source_file(s);
        }
        if (line > 0)
                r = asprintf(&p->error, "%s:%u: %s", file, line, msg);
        else
                r = asprintf(&p->error, "%s: %s", file, msg);
        if (r < 0) {
                p->error = NULL;
                return -ENOMEM;
        }
        return err;
}

/* A new string, or NULL on allocation failure. */
_printf_(1, 2) static char *strdup_printf(const char *fmt, ...)
{
        va_list ap;
        char *s;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        return r < 0 ? NULL : s;
}

static int oom(struct parser *p)
{
        return fail(p, NULL, -ENOMEM, "out of memory");
}

/*
 * Checks that every child of `group` is named in `allowed` (NULL-terminated). `where` is
 * appended to the message, e.g. " in variant 'small'"; "" at the top level.
 */
static int check_keys(struct parser *p, const config_setting_t *group, const char *const *allowed,
                      const char *prefix, const char *where)
{
        int n = config_setting_length(group);

        for (int i = 0; i < n; i++) {
                const config_setting_t *s = config_setting_get_elem(group, i);
                const char *name = config_setting_name(s);
                bool known = false;

                for (const char *const *a = allowed; *a; a++)
                        if (name && strcmp(name, *a) == 0) {
                                known = true;
                                break;
                        }
                if (!known)
                        return fail(p, s, -EINVAL, "%sunknown setting '%s'%s", prefix,
                                    name ? name : "?", where);
        }
        return 0;
}

/*
 * Typed lookups of `key` in `group`. Each returns 1 and sets *ret when the setting is present
 * and of the right type, 0 when it is absent (*ret unchanged), or -EINVAL for a wrong type.
 * `prefix` ("pipeline 'x': variant 'y': " or "") starts the message.
 */
static int get_string(struct parser *p, const config_setting_t *group, const char *key,
                      const char *prefix, const config_setting_t **ret_setting, const char **ret)
{
        const config_setting_t *s = config_setting_get_member(group, key);

        if (!s)
                return 0;
        if (config_setting_type(s) != CONFIG_TYPE_STRING)
                return fail(p, s, -EINVAL, "%s'%s' must be a string", prefix, key);
        if (ret_setting)
                *ret_setting = s;
        *ret = config_setting_get_string(s);
        return 1;
}

static int get_int(struct parser *p, const config_setting_t *group, const char *key,
                   const char *prefix, const config_setting_t **ret_setting, long long *ret)
{
        const config_setting_t *s = config_setting_get_member(group, key);

        if (!s)
                return 0;
        if (config_setting_type(s) != CONFIG_TYPE_INT &&
            config_setting_type(s) != CONFIG_TYPE_INT64)
                return fail(p, s, -EINVAL, "%s'%s' must be an integer", prefix, key);
        if (ret_setting)
                *ret_setting = s;
        *ret = config_setting_get_int64(s);
        return 1;
}

/* Like get_int(), and checks min <= value <= max. */
static int get_int_range(struct parser *p, const config_setting_t *group, const char *key,
                         const char *prefix, long long min, long long max, long long *ret)
{
        const config_setting_t *s = NULL;
        long long v = 0;
        int r;

        r = get_int(p, group, key, prefix, &s, &v);
        if (r <= 0)
                return r;
        if (v < min || v > max) {
                if (max == LLONG_MAX)
                        return fail(p, s, -EINVAL, "%s'%s' must be at least %lld, not %lld", prefix,
                                    key, min, v);
                return fail(p, s, -EINVAL, "%s'%s' must be between %lld and %lld, not %lld", prefix,
                            key, min, max, v);
        }
        *ret = v;
        return 1;
}

static int get_bool(struct parser *p, const config_setting_t *group, const char *key,
                    const char *prefix, bool *ret)
{
        const config_setting_t *s = config_setting_get_member(group, key);

        if (!s)
                return 0;
        if (config_setting_type(s) != CONFIG_TYPE_BOOL)
                return fail(p, s, -EINVAL, "%s'%s' must be true or false", prefix, key);
        *ret = config_setting_get_bool(s);
        return 1;
}

/* A number: float, or an integer written without a decimal point. */
static int get_number(struct parser *p, const config_setting_t *group, const char *key,
                      const char *prefix, const config_setting_t **ret_setting, double *ret)
{
        const config_setting_t *s = config_setting_get_member(group, key);

        if (!s)
                return 0;
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_FLOAT:
                *ret = config_setting_get_float(s);
                break;
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                *ret = (double)config_setting_get_int64(s);
                break;
        default:
                return fail(p, s, -EINVAL, "%s'%s' must be a number", prefix, key);
        }
        if (ret_setting)
                *ret_setting = s;
        return 1;
}

/*
 * Normalises an absolute directory path: collapses repeated slashes and strips trailing
 * ones. Returns 0 and a new string, -EINVAL if it is relative, is "/", or has a "." or ".."
 * component, -ENOMEM.
 */
static int normalize_dir(const char *path, char **ret)
{
        _cleanup_free_ char *out = NULL;
        const char *c = path;
        size_t n = 0;

        if (path[0] != '/')
                return -EINVAL;
        out = malloc(strlen(path) + 1);
        if (!out)
                return -ENOMEM;

        while (*c) {
                size_t len;

                while (*c == '/')
                        c++;
                if (!*c)
                        break;
                len = strcspn(c, "/");
                if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
                        return -EINVAL;
                out[n++] = '/';
                memcpy(out + n, c, len);
                n += len;
                c += len;
        }
        if (n == 0)
                return -EINVAL;
        out[n] = '\0';
        *ret = TAKE_PTR(out);
        return 0;
}

/* True if `path` is `dir` or below it, comparing whole components. Both normalised. */
static bool path_is_below_or_equal(const char *path, const char *dir)
{
        size_t n = strlen(dir);

        return strncmp(path, dir, n) == 0 && (path[n] == '\0' || path[n] == '/');
}

/* Reads a normalised absolute directory path setting; 0 if absent. */
static int get_dir(struct parser *p, const config_setting_t *group, const char *key,
                   const char *prefix, char **ret)
{
        const config_setting_t *s = NULL;
        const char *v = NULL;
        int r;

        r = get_string(p, group, key, prefix, &s, &v);
        if (r <= 0)
                return r;
        if (v[0] != '/')
                return fail(p, s, -EINVAL, "%s'%s' must be an absolute path, not \"%s\"", prefix,
                            key, v);
        if (strspn(v, "/") == strlen(v))
                return fail(p, s, -EINVAL, "%s'%s' must not be the root directory", prefix, key);
        r = normalize_dir(v, ret);
        if (r == -ENOMEM)
                return oom(p);
        if (r < 0)
                return fail(p, s, -EINVAL,
                            "%s'%s' must not contain \".\" or \"..\" components: \"%s\"", prefix,
                            key, v);
        return 1;
}

static int hexval(char c)
{
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Parses "#rrggbb" or "#rgb". */
static int parse_colour(const char *s, uint8_t ret[3])
{
        size_t n = strlen(s);
        uint8_t c[3];

        if (s[0] != '#' || (n != 7 && n != 4))
                return -EINVAL;
        for (size_t i = 1; i < n; i++)
                if (hexval(s[i]) < 0)
                        return -EINVAL;
        for (int i = 0; i < 3; i++) {
                if (n == 7)
                        c[i] = (uint8_t)(hexval(s[1 + 2 * i]) << 4 | hexval(s[2 + 2 * i]));
                else
                        c[i] = (uint8_t)(hexval(s[1 + i]) * 17);
        }
        memcpy(ret, c, sizeof c);
        return 0;
}

/* Reads the colour setting `key` ("#rrggbb" or "#rgb"); 0 if absent. */
static int get_colour(struct parser *p, const config_setting_t *group, const char *key,
                      const char *prefix, uint8_t ret[3])
{
        const config_setting_t *s = NULL;
        const char *v = NULL;
        int r;

        r = get_string(p, group, key, prefix, &s, &v);
        if (r <= 0)
                return r;
        if (parse_colour(v, ret) < 0)
                return fail(p, s, -EINVAL,
                            "%s'%s' must be a colour \"#rrggbb\" or \"#rgb\", not \"%s\"", prefix,
                            key, v);
        return 1;
}

static bool variant_name_valid(const char *name)
{
        size_t n = strlen(name);

        if (n < 1 || n >= VARIANT_NAME_MAX)
                return false;
        return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") ==
               n;
}

/* "a, b, c": the names of names[0..n), into buf. */
static const char *name_list(char *buf, size_t size, const char *(*name)(int), int first, int n)
{
        size_t len = 0;

        buf[0] = '\0';
        for (int i = first; i < n && len < size; i++)
                len += (size_t)snprintf(buf + len, size - len, "%s%s", i > first ? ", " : "",
                                        name(i));
        return buf;
}

static const char *fit_name_i(int i)
{
        return variant_fit_name(i);
}

static const char *mask_name_i(int i)
{
        return variant_mask_name(i);
}

static const char *gravity_name_i(int i)
{
        return variant_gravity_name(i);
}

static const char *chroma_name_i(int i)
{
        return variant_chroma_name(i);
}

/* "cover, contain, inside, fill, none" and the like, into buf. */
static const char *fit_list(char *buf, size_t size)
{
        return name_list(buf, size, fit_name_i, 0, _VARIANT_FIT_MAX);
}

static const char *mask_list(char *buf, size_t size)
{
        return name_list(buf, size, mask_name_i, 0, _VARIANT_MASK_MAX);
}

static bool format_alpha_writable(enum image_format f)
{
        return variant_format_writable(f) && image_format_has_alpha(f);
}

static bool format_effort(enum image_format f)
{
        return variant_format_effort_max(f) > 0;
}

static bool format_lossy(enum image_format f)
{
        struct variant v = { .format = f };

        return variant_uses_quality(&v);
}

/*
 * The output formats for which pred() holds, in the order the documentation lists them,
 * and "same" if `same`: "jpeg, webp, png, avif, gif, same".
 */
static const char *format_list(char *buf, size_t size, bool (*pred)(enum image_format), bool same)
{
        static const enum image_format order[] = { IMAGE_FORMAT_JPEG, IMAGE_FORMAT_WEBP,
                                                   IMAGE_FORMAT_PNG, IMAGE_FORMAT_AVIF,
                                                   IMAGE_FORMAT_GIF };
        size_t n = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(order) && n < size; i++) {
                if (!pred(order[i]))
                        continue;
                n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "",
                                      image_format_name(order[i]));
        }
        if (same && n < size)
                snprintf(buf + n, size - n, "%ssame", n ? ", " : "");
        return buf;
}

static const char *format_name(enum image_format f)
{
        return f == VARIANT_FORMAT_SAME ? "same" : image_format_name(f);
}

/*
 * Fails unless the option `key` (set at s) applies to format f, i.e. pred(f) holds; the
 * message lists the formats it applies to.
 */
static int check_option_format(struct parser *p, const config_setting_t *s, const char *prefix,
                               const char *key, enum image_format f,
                               bool (*pred)(enum image_format))
{
        char list[128];

        if (f != VARIANT_FORMAT_SAME && pred(f))
                return 0;
        return fail(p, s, -EINVAL, "%s'%s' applies to %s only, not %s%s", prefix, key,
                    format_list(list, sizeof list, pred, false), format_name(f),
                    f == VARIANT_FORMAT_SAME ? " (name the output format)" : "");
}

/* A number in (0, 1] (or [0, 1] when zero_ok); 0 if absent. */
static int get_fraction(struct parser *p, const config_setting_t *group, const char *key,
                        const char *prefix, const char *what, double *ret)
{
        const config_setting_t *s = NULL;
        double v = 0;
        int r;

        r = get_number(p, group, key, prefix, &s, &v);
        if (r <= 0)
                return r;
        if (!(v > 0.0 && v <= 1.0))
                return fail(p, s, -EINVAL, "%s'%s' must be more than 0 and at most 1%s, not %g",
                            prefix, key, what, v);
        *ret = v;
        return 1;
}

/* Reads watermark = { ... } of a variant into v->watermark; 0 if absent. */
static int parse_watermark(struct parser *p, const config_setting_t *variant, const char *prefix,
                           const char *where, struct variant *v)
{
        static const char *const keys[] = { "image",  "text",    "font",  "color", "position",
                                            "margin", "opacity", "width", NULL };
        const config_setting_t *s = config_setting_get_member(variant, "watermark");
        const config_setting_t *image_s = NULL, *text_s = NULL, *font_s = NULL, *pos_s = NULL;
        _cleanup_free_ char *wprefix = NULL, *in = NULL;
        struct variant_watermark w = {
                .position = VARIANT_GRAVITY_SOUTH_EAST,
                .margin = 16,
                .opacity = 1.0,
        };
        const char *image = NULL, *text = NULL, *font = NULL, *position = NULL;
        long long margin = 0;
        char list[192];
        int r, has_image, has_text;

        if (!s)
                return 0;
        if (!config_setting_is_group(s))
                return fail(p, s, -EINVAL,
                            "%s'watermark' must be a group: watermark = { image = \"...\"; } or "
                            "watermark = { text = \"...\"; }",
                            prefix);
        wprefix = strdup_printf("%swatermark: ", prefix);
        in = strdup_printf(" in the watermark of %s", where);
        if (!wprefix || !in)
                return oom(p);
        r = check_keys(p, s, keys, prefix, in);
        if (r < 0)
                return r;

        has_image = get_string(p, s, "image", wprefix, &image_s, &image);
        if (has_image < 0)
                return has_image;
        has_text = get_string(p, s, "text", wprefix, &text_s, &text);
        if (has_text < 0)
                return has_text;
        if (has_image && has_text)
                return fail(p, text_s, -EINVAL, "%s'image' and 'text' cannot both be set", wprefix);
        if (!has_image && !has_text)
                return fail(p, s, -EINVAL, "%s'image' or 'text' is required", wprefix);

        if (has_image) {
                w.kind = VARIANT_WATERMARK_IMAGE;
                w.width = 0.25;
                if (image[0] != '/')
                        return fail(p, image_s, -EINVAL,
                                    "%s'image' must be an absolute path, not \"%s\"", wprefix,
                                    image);
                if (strlen(image) >= sizeof w.image)
                        return fail(p, image_s, -EINVAL,
                                    "%s'image' path is too long (at most %d "
                                    "bytes)",
                                    wprefix, VARIANT_PATH_MAX - 1);
                strcpy(w.image, image);
                if (config_setting_get_member(s, "font"))
                        return fail(p, config_setting_get_member(s, "font"), -EINVAL,
                                    "%s'font' applies to text watermarks only", wprefix);
                if (config_setting_get_member(s, "color"))
                        return fail(p, config_setting_get_member(s, "color"), -EINVAL,
                                    "%s'color' applies to text watermarks only", wprefix);
        } else {
                w.kind = VARIANT_WATERMARK_TEXT;
                if (text[0] == '\0' || strlen(text) >= sizeof w.text)
                        return fail(p, text_s, -EINVAL, "%s'text' must be 1 to %d bytes long",
                                    wprefix, VARIANT_TEXT_MAX - 1);
                strcpy(w.text, text);
                r = get_string(p, s, "font", wprefix, &font_s, &font);
                if (r < 0)
                        return r;
                if (r == 0)
                        font = "sans 24";
                if (font[0] == '\0' || strlen(font) >= sizeof w.font)
                        return fail(p, font_s, -EINVAL,
                                    "%s'font' must be a font description such as \"sans bold "
                                    "24\" (at most %d bytes)",
                                    wprefix, VARIANT_FONT_MAX - 1);
                strcpy(w.font, font);
                memset(w.color, 255, sizeof w.color);
                r = get_colour(p, s, "color", wprefix, w.color);
                if (r < 0)
                        return r;
        }

        r = get_string(p, s, "position", wprefix, &pos_s, &position);
        if (r < 0)
                return r;
        if (r > 0) {
                r = variant_gravity_from_name(position);
                if (r < 0 || r >= _VARIANT_POSITION_MAX)
                        return fail(p, pos_s, -EINVAL, "%sposition must be one of %s, not \"%s\"",
                                    wprefix,
                                    name_list(list, sizeof list, gravity_name_i, 0,
                                              _VARIANT_POSITION_MAX),
                                    position);
                w.position = r;
        }
        r = get_int_range(p, s, "margin", wprefix, 0, VARIANT_MARGIN_MAX, &margin);
        if (r < 0)
                return r;
        if (r > 0)
                w.margin = (unsigned)margin;
        r = get_fraction(p, s, "opacity", wprefix, "", &w.opacity);
        if (r < 0)
                return r;
        r = get_fraction(p, s, "width", wprefix, " (a fraction of the output's width)", &w.width);
        if (r < 0)
                return r;

        v->watermark = w;
        return 0;
}

/* Reads keep = [ "icc", "copyright" ] into v->keep. */
static int parse_keep(struct parser *p, const config_setting_t *variant, const char *prefix,
                      struct variant *v)
{
        const config_setting_t *s = config_setting_get_member(variant, "keep");
        int n;

        if (!s)
                return 0;
        if (!config_setting_is_array(s) && !config_setting_is_list(s))
                return fail(p, s, -EINVAL,
                            "%s'keep' must be a list of names: keep = [ \"icc\", \"copyright\" ];",
                            prefix);
        n = config_setting_length(s);
        for (int i = 0; i < n; i++) {
                const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
                const char *name = config_setting_type(e) == CONFIG_TYPE_STRING
                                           ? config_setting_get_string(e)
                                           : NULL;
                int bit = variant_keep_from_name(name);

                if (bit < 0)
                        return fail(p, e, -EINVAL,
                                    "%s'keep' entries must be \"icc\" or \"copyright\", not %s%s%s",
                                    prefix, name ? "\"" : "", name ? name : "a non-string",
                                    name ? "\"" : "");
                if (v->keep & (unsigned)bit)
                        return fail(p, e, -EINVAL, "%s'keep' lists \"%s\" twice", prefix, name);
                v->keep |= (unsigned)bit;
        }
        /* "same" is fine: every format it can become keeps both. */
        if (v->keep && v->format != VARIANT_FORMAT_SAME)
                return check_option_format(p, s, prefix, "keep", v->format, variant_format_keep);
        return 0;
}

/* The encoder settings of a variant: effort, progressive, lossless, chroma, max_bytes. */
static int parse_encoder(struct parser *p, const config_setting_t *s, const char *prefix,
                         struct variant *v)
{
        const config_setting_t *set = NULL;
        const char *chroma = NULL;
        long long effort = 0, max_bytes = 0;
        char list[128];
        int r;

        r = get_int(p, s, "effort", prefix, &set, &effort);
        if (r < 0)
                return r;
        if (r > 0) {
                unsigned max =
                        v->format == VARIANT_FORMAT_SAME ? 0 : variant_format_effort_max(v->format);

                r = check_option_format(p, set, prefix, "effort", v->format, format_effort);
                if (r < 0)
                        return r;
                if (effort < 0 || effort > max)
                        return fail(p, set, -EINVAL,
                                    "%s'effort' must be between 0 and %u for %s, not %lld", prefix,
                                    max, image_format_name(v->format), effort);
                v->effort = (unsigned)effort;
        }

        set = config_setting_get_member(s, "progressive");
        r = get_bool(p, s, "progressive", prefix, &v->progressive);
        if (r < 0)
                return r;
        if (r > 0 && v->progressive) {
                r = check_option_format(p, set, prefix, "progressive", v->format,
                                        variant_format_progressive);
                if (r < 0)
                        return r;
        }

        set = config_setting_get_member(s, "lossless");
        r = get_bool(p, s, "lossless", prefix, &v->lossless);
        if (r < 0)
                return r;
        if (r > 0 && v->lossless) {
                r = check_option_format(p, set, prefix, "lossless", v->format,
                                        variant_format_lossless);
                if (r < 0)
                        return r;
        }

        r = get_string(p, s, "chroma", prefix, &set, &chroma);
        if (r < 0)
                return r;
        if (r > 0) {
                r = variant_chroma_from_name(chroma);
                if (r < 0)
                        return fail(
                                p, set, -EINVAL, "%schroma must be one of %s, not \"%s\"", prefix,
                                name_list(list, sizeof list, chroma_name_i, 0, _VARIANT_CHROMA_MAX),
                                chroma);
                v->chroma = r;
                r = check_option_format(p, set, prefix, "chroma", v->format, variant_format_chroma);
                if (r < 0)
                        return r;
        }

        r = get_int(p, s, "max_bytes", prefix, &set, &max_bytes);
        if (r < 0)
                return r;
        if (r > 0) {
                if (max_bytes < VARIANT_MAX_BYTES_MIN)
                        return fail(p, set, -EINVAL, "%s'max_bytes' must be at least %d, not %lld",
                                    prefix, VARIANT_MAX_BYTES_MIN, max_bytes);
                if (v->format == VARIANT_FORMAT_SAME || !variant_uses_quality(v))
                        return fail(p, set, -EINVAL,
                                    "%s'max_bytes' needs a format encoded with a quality (%s), "
                                    "not %s%s",
                                    prefix, format_list(list, sizeof list, format_lossy, false),
                                    v->lossless ? "lossless " : "", format_name(v->format));
                v->max_bytes = (uint64_t)max_bytes;
        }
        set = config_setting_get_member(s, "max_bytes_strict");
        r = get_bool(p, s, "max_bytes_strict", prefix, &v->max_bytes_strict);
        if (r < 0)
                return r;
        if (v->max_bytes_strict && v->max_bytes == 0)
                return fail(p, set, -EINVAL, "%s'max_bytes_strict' needs 'max_bytes'", prefix);
        return 0;
}

static int parse_variant(struct parser *p, const char *pipeline, const config_setting_t *s,
                         int index, struct variant *ret)
{
        static const char *const keys[] = {
                "name",     "width",     "height",      "fit",
                "format",   "quality",   "mask",        "background",
                "gravity",  "effort",    "progressive", "lossless",
                "chroma",   "keep",      "max_bytes",   "max_bytes_strict",
                "animated", "watermark", "essential",   NULL
        };
        const config_setting_t *name_s = NULL, *fit_s = NULL, *format_s = NULL, *mask_s = NULL;
        const config_setting_t *w_s = NULL, *h_s = NULL, *gravity_s = NULL, *set = NULL;
        _cleanup_free_ char *prefix = NULL, *where = NULL, *pipeline_prefix = NULL, *in = NULL;
        _cleanup_free_ char *check_error = NULL;
        const char *name = NULL, *fit = NULL, *format = NULL, *mask = NULL, *gravity = NULL;
        long long width = 0, height = 0, quality = 80;
        struct variant v;
        char list[192];
        int r, has_w, has_h;

        variant_init(&v);
        if (!config_setting_is_group(s))
                return fail(p, s, -EINVAL,
                            "pipeline '%s': variant #%d must be a group { name = ...; ... }",
                            pipeline, index + 1);

        /* Name the variant in messages by its name where it has a usable one. */
        name_s = config_setting_get_member(s, "name");
        if (name_s && config_setting_type(name_s) == CONFIG_TYPE_STRING &&
            variant_name_valid(config_setting_get_string(name_s)))
                where = strdup_printf("variant '%s'", config_setting_get_string(name_s));
        else
                where = strdup_printf("variant #%d", index + 1);
        if (!where)
                return oom(p);
        pipeline_prefix = strdup_printf("pipeline '%s': ", pipeline);
        prefix = strdup_printf("pipeline '%s': %s: ", pipeline, where);
        in = strdup_printf(" in %s", where);
        if (!pipeline_prefix || !prefix || !in)
                return oom(p);

        r = check_keys(p, s, keys, pipeline_prefix, in);
        if (r < 0)
                return r;

        r = get_string(p, s, "name", prefix, &name_s, &name);
        if (r < 0)
                return r;
        if (r == 0)
                return fail(p, s, -EINVAL, "%s'name' is required", prefix);
        if (!variant_name_valid(name))
                return fail(p, name_s, -EINVAL,
                            "%s'name' must be 1 to %d characters of A-Z, a-z, 0-9, '_' and '-', "
                            "not \"%s\"",
                            prefix, VARIANT_NAME_MAX - 1, name);
        strcpy(v.name, name);

        r = get_string(p, s, "fit", prefix, &fit_s, &fit);
        if (r < 0)
                return r;
        if (r == 0)
                v.fit = VARIANT_FIT_COVER;
        else {
                r = variant_fit_from_name(fit);
                if (r < 0)
                        return fail(p, fit_s, -EINVAL, "%sfit must be one of %s, not \"%s\"",
                                    prefix, fit_list(list, sizeof list), fit);
                v.fit = r;
        }

        has_w = get_int(p, s, "width", prefix, &w_s, &width);
        if (has_w < 0)
                return has_w;
        has_h = get_int(p, s, "height", prefix, &h_s, &height);
        if (has_h < 0)
                return has_h;
        if (v.fit == VARIANT_FIT_NONE) {
                if (width != 0)
                        return fail(p, w_s, -EINVAL,
                                    "%s'width' must be absent or 0 with fit = \"none\"", prefix);
                if (height != 0)
                        return fail(p, h_s, -EINVAL,
                                    "%s'height' must be absent or 0 with fit = \"none\"", prefix);
        } else {
                if (!has_w)
                        return fail(p, s, -EINVAL, "%s'width' is required with fit = \"%s\"",
                                    prefix, variant_fit_name(v.fit));
                if (!has_h)
                        return fail(p, s, -EINVAL, "%s'height' is required with fit = \"%s\"",
                                    prefix, variant_fit_name(v.fit));
                if (width < 1 || width > VARIANT_DIMENSION_MAX)
                        return fail(p, w_s, -EINVAL, "%s'width' must be between 1 and %d, not %lld",
                                    prefix, VARIANT_DIMENSION_MAX, width);
                if (height < 1 || height > VARIANT_DIMENSION_MAX)
                        return fail(p, h_s, -EINVAL,
                                    "%s'height' must be between 1 and %d, not %lld", prefix,
                                    VARIANT_DIMENSION_MAX, height);
        }
        v.width = (unsigned)width;
        v.height = (unsigned)height;

        r = get_string(p, s, "gravity", prefix, &gravity_s, &gravity);
        if (r < 0)
                return r;
        if (r > 0) {
                r = variant_gravity_from_name(gravity);
                if (r < 0)
                        return fail(p, gravity_s, -EINVAL,
                                    "%sgravity must be one of %s, not \"%s\"", prefix,
                                    name_list(list, sizeof list, gravity_name_i, 0,
                                              _VARIANT_GRAVITY_MAX),
                                    gravity);
                if (v.fit != VARIANT_FIT_COVER)
                        return fail(p, gravity_s, -EINVAL,
                                    "%s'gravity' needs fit = \"cover\" (it says which part a "
                                    "crop keeps), not fit = \"%s\"",
                                    prefix, variant_fit_name(v.fit));
                v.gravity = r;
        }

        r = get_string(p, s, "format", prefix, &format_s, &format);
        if (r < 0)
                return r;
        if (r == 0)
                return fail(p, s, -EINVAL, "%s'format' is required (one of %s)", prefix,
                            format_list(list, sizeof list, variant_format_writable, true));
        if (strcmp(format, "same") == 0)
                v.format = VARIANT_FORMAT_SAME;
        else if (variant_format_writable(image_format_from_name(format)))
                v.format = image_format_from_name(format);
        else
                return fail(p, format_s, -EINVAL, "%sformat must be one of %s, not \"%s\"", prefix,
                            format_list(list, sizeof list, variant_format_writable, true), format);

        r = get_int_range(p, s, "quality", prefix, 1, 100, &quality);
        if (r < 0)
                return r;
        v.quality = (unsigned)quality;

        r = get_bool(p, s, "essential", prefix, &v.essential);
        if (r < 0)
                return r;

        r = get_string(p, s, "mask", prefix, &mask_s, &mask);
        if (r < 0)
                return r;
        if (r == 0)
                v.mask = VARIANT_MASK_NONE;
        else {
                r = variant_mask_from_name(mask);
                if (r < 0)
                        return fail(p, mask_s, -EINVAL, "%smask must be one of %s, not \"%s\"",
                                    prefix, mask_list(list, sizeof list), mask);
                v.mask = r;
        }
        if (v.mask == VARIANT_MASK_CIRCLE &&
            (v.format == VARIANT_FORMAT_SAME || !image_format_has_alpha(v.format)))
                return fail(p, mask_s, -EINVAL,
                            "%smask = \"circle\" needs a format with alpha (%s), not %s", prefix,
                            format_list(list, sizeof list, format_alpha_writable, false),
                            format_name(v.format));

        memcpy(v.background, p->background, sizeof v.background);
        r = get_colour(p, s, "background", prefix, v.background);
        if (r < 0)
                return r;

        r = parse_encoder(p, s, prefix, &v);
        if (r < 0)
                return r;
        r = parse_keep(p, s, prefix, &v);
        if (r < 0)
                return r;

        set = config_setting_get_member(s, "animated");
        r = get_bool(p, s, "animated", prefix, &v.animated);
        if (r < 0)
                return r;
        if (v.animated && v.format != VARIANT_FORMAT_SAME && !variant_format_animated(v.format))
                return fail(p, set, -EINVAL,
                            "%s'animated' needs a format that can hold an animation (%s) or "
                            "same, not %s",
                            prefix, format_list(list, sizeof list, variant_format_animated, false),
                            image_format_name(v.format));

        r = parse_watermark(p, s, prefix, where, &v);
        if (r < 0)
                return r;

        /* What the workers will check; the settings above must already have said why. */
        r = variant_check(&v, &check_error);
        if (r < 0)
                return fail(p, s, r, "%s%s", prefix, check_error ? check_error : "invalid");

        *ret = v;
        return 0;
}

/* Reads the variants of a pipeline from the list s into ret. */
static int parse_variants(struct parser *p, const char *name, const config_setting_t *s,
                          struct pipeline *ret)
{
        _cleanup_free_ struct variant *variants = NULL;
        int n, r;

        n = config_setting_length(s);
        if (n < 1)
                return fail(p, s, -EINVAL, "pipeline '%s' has no variants", name);
        if (n > PIPELINE_VARIANTS_MAX)
                return fail(p, s, -EINVAL, "pipeline '%s' has %d variants, at most %d are allowed",
                            name, n, PIPELINE_VARIANTS_MAX);

        variants = calloc((size_t)n, sizeof *variants);
        if (!variants)
                return oom(p);
        for (int i = 0; i < n; i++) {
                const config_setting_t *vs = config_setting_get_elem(s, i);

                r = parse_variant(p, name, vs, i, &variants[i]);
                if (r < 0)
                        return r;
                for (int j = 0; j < i; j++)
                        if (strcmp(variants[j].name, variants[i].name) == 0)
                                return fail(p, config_setting_get_member(vs, "name"), -EINVAL,
                                            "pipeline '%s': variant '%s' is defined twice", name,
                                            variants[i].name);
        }
        ret->variants = TAKE_PTR(variants);
        ret->n_variants = (size_t)n;
        return 0;
}

/*
 * A pipeline is a list of variants, or a group { placeholder = true; variants = ( ... ); }
 * for the pipeline-wide settings.
 */
static int parse_pipeline(struct parser *p, const config_setting_t *s, struct pipeline *ret)
{
        static const char *const keys[] = { "variants", "placeholder", NULL };
        _cleanup_free_ char *name = NULL, *prefix = NULL, *in = NULL;
        const config_setting_t *list = s;
        bool placeholder = false;
        int r;

        name = strdup(config_setting_name(s));
        if (!name)
                return oom(p);
        if (config_setting_is_group(s)) {
                prefix = strdup_printf("pipeline '%s': ", name);
                in = strdup_printf(" in pipeline '%s'", name);
                if (!prefix || !in)
                        return oom(p);
                r = check_keys(p, s, keys, "", in);
                if (r < 0)
                        return r;
                r = get_bool(p, s, "placeholder", prefix, &placeholder);
                if (r < 0)
                        return r;
                list = config_setting_get_member(s, "variants");
                if (!list)
                        return fail(
                                p, s, -EINVAL,
                                "%s'variants' is required: variants = ( { name = ...; }, ... );",
                                prefix);
                if (!config_setting_is_list(list))
                        return fail(p, list, -EINVAL,
                                    "%s'variants' must be a list: variants = ( { name = ...; }, "
                                    "... );",
                                    prefix);
        } else if (!config_setting_is_list(s)) {
                return fail(p, s, -EINVAL,
                            "pipeline '%s' must be a list of variants: %s = ( { name = ...; }, "
                            "... ); or a group: %s = { placeholder = true; variants = ( ... ); };",
                            name, name, name);
        }

        r = parse_variants(p, name, list, ret);
        if (r < 0)
                return r;
        ret->name = TAKE_PTR(name);
        ret->placeholder = placeholder;
        return 0;
}

static int parse_pipelines(struct parser *p, const config_setting_t *root, struct config *c)
{
        const config_setting_t *s = config_setting_get_member(root, "pipelines");
        int n, r;

        if (!s)
                return fail(p, NULL, -EINVAL, "no pipelines defined: pipelines = { ... };");
        if (!config_setting_is_group(s))
                return fail(p, s, -EINVAL,
                            "'pipelines' must be a group of named lists: pipelines = { name = ( "
                            "... ); };");
        n = config_setting_length(s);
        if (n < 1)
                return fail(p, s, -EINVAL, "no pipelines defined in 'pipelines'");

        c->pipelines = calloc((size_t)n, sizeof *c->pipelines);
        if (!c->pipelines)
                return oom(p);
        for (int i = 0; i < n; i++) {
                r = parse_pipeline(p, config_setting_get_elem(s, i), &c->pipelines[i]);
                if (r < 0)
                        return r;
                c->n_pipelines++;
        }
        return 0;
}

static int parse_watch(struct parser *p, const struct config *c, const config_setting_t *s,
                       int index, struct watch_config *ret)
{
        static const char *const keys[] = { "path",      "output",       "pipeline",
                                            "recursive", "quarantine",   "on_done",
                                            "on_dead",   "hook_timeout", NULL };
        _cleanup_free_ char *prefix = NULL, *where = NULL, *in = NULL, *path = NULL, *output = NULL,
                            *pipeline_name = NULL, *quarantine = NULL, *on_done = NULL,
                            *on_dead = NULL;
        const config_setting_t *hook_s = NULL;
        const char *hook = NULL;
        long long hook_timeout = 30;
        const config_setting_t *pipeline_s = NULL, *path_s;
        const struct pipeline *pipeline;
        const char *pname = NULL;
        bool recursive = false;
        int r;

        if (!config_setting_is_group(s))
                return fail(p, s, -EINVAL, "watch #%d must be a group { path = ...; ... }",
                            index + 1);

        path_s = config_setting_get_member(s, "path");
        if (path_s && config_setting_type(path_s) == CONFIG_TYPE_STRING)
                where = strdup_printf("watch '%s'", config_setting_get_string(path_s));
        else
                where = strdup_printf("watch #%d", index + 1);
        if (!where)
                return oom(p);
        prefix = strdup_printf("%s: ", where);
        in = strdup_printf(" in %s", where);
        if (!prefix || !in)
                return oom(p);

        r = check_keys(p, s, keys, "", in);
        if (r < 0)
                return r;

        r = get_dir(p, s, "path", prefix, &path);
        if (r < 0)
                return r;
        if (r == 0)
                return fail(p, s, -EINVAL, "%s'path' is required", prefix);
        r = get_dir(p, s, "output", prefix, &output);
        if (r < 0)
                return r;
        if (r == 0)
                return fail(p, s, -EINVAL, "%s'output' is required", prefix);

        r = get_string(p, s, "pipeline", prefix, &pipeline_s, &pname);
        if (r < 0)
                return r;
        if (r == 0)
                return fail(p, s, -EINVAL, "%s'pipeline' is required", prefix);
        pipeline = config_find_pipeline(c, pname);
        if (!pipeline)
                return fail(p, pipeline_s, -EINVAL, "%spipeline '%s' is not defined in 'pipelines'",
                            prefix, pname);
        pipeline_name = strdup(pname);
        if (!pipeline_name)
                return oom(p);

        r = get_bool(p, s, "recursive", prefix, &recursive);
        if (r < 0)
                return r;

        r = get_dir(p, s, "quarantine", prefix, &quarantine);
        if (r < 0)
                return r;
        if (quarantine && (path_is_below_or_equal(quarantine, path) ||
                           path_is_below_or_equal(quarantine, output)))
                return fail(p, config_setting_get_member(s, "quarantine"), -EINVAL,
                            "%squarantine %s must be outside the watched path and the output",
                            prefix, quarantine);
        for (int k = 0; k < 2; k++) {
                const char *key = k == 0 ? "on_done" : "on_dead";
                r = get_string(p, s, key, prefix, &hook_s, &hook);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                if (hook[0] != '/')
                        return fail(p, hook_s, -EINVAL,
                                    "%s'%s' must be an absolute path to a program, not \"%s\"",
                                    prefix, key, hook);
                char *copy = strdup(hook);
                if (!copy)
                        return oom(p);
                if (k == 0)
                        on_done = copy;
                else
                        on_dead = copy;
        }
        r = get_int_range(p, s, "hook_timeout", prefix, 1, 3600, &hook_timeout);
        if (r < 0)
                return r;

        ret->quarantine = TAKE_PTR(quarantine);
        ret->on_done = TAKE_PTR(on_done);
        ret->on_dead = TAKE_PTR(on_dead);
        ret->hook_timeout_s = (unsigned)hook_timeout;
        ret->path = TAKE_PTR(path);
        ret->output = TAKE_PTR(output);
        ret->pipeline_name = TAKE_PTR(pipeline_name);
        ret->pipeline = pipeline;
        ret->recursive = recursive;
        ret->line = config_setting_source_line(s);
        return 0;
}

/*
 * Rejects, by name: duplicate watched paths, a watched path inside a recursive watch (the
 * inner tree would belong to both), outputs and quarantine folders that overlap a watched
 * path, and quarantine folders inside an output. config_check_paths() does it again on the
 * resolved directories.
 */
static int check_watch_overlaps(struct parser *p, const config_setting_t *list,
                                const struct config *c)
{
        for (size_t i = 0; i < c->n_watches; i++) {
                const struct watch_config *w = &c->watches[i];
                const config_setting_t *s = config_setting_get_elem(list, (unsigned)i);

                for (size_t j = 0; j < c->n_watches; j++) {
                        const struct watch_config *o = &c->watches[j];

                        if (j < i && strcmp(w->path, o->path) == 0)
                                return fail(p, config_setting_get_member(s, "path"), -EINVAL,
                                            "watch '%s': path is already watched (line %d)",
                                            w->path, o->line);
                        if (j != i && o->recursive && path_is_below_or_equal(w->path, o->path) &&
                            strcmp(w->path, o->path) != 0)
                                return fail(p, config_setting_get_member(s, "path"), -EINVAL,
                                            "watch '%s': path is inside watch '%s' (line %d), "
                                            "which is recursive; files below it would belong to "
                                            "both watches",
                                            w->path, o->path, o->line);
                        if (path_is_below_or_equal(w->output, o->path))
                                return fail(p, config_setting_get_member(s, "output"), -EINVAL,
                                            "watch '%s': output %s is inside watched path %s "
                                            "(line %d); outputs would be picked up as uploads",
                                            w->path, w->output, o->path, o->line);
                        if (path_is_below_or_equal(w->path, o->output))
                                return fail(p, config_setting_get_member(s, "path"), -EINVAL,
                                            "watch '%s': watched path is inside output %s of "
                                            "watch '%s' (line %d); outputs would be picked up as "
                                            "uploads",
                                            w->path, o->output, o->path, o->line);
                        if (w->quarantine && (path_is_below_or_equal(w->quarantine, o->path) ||
                                              path_is_below_or_equal(o->path, w->quarantine)))
                                return fail(p, config_setting_get_member(s, "quarantine"), -EINVAL,
                                            "watch '%s': quarantine %s overlaps watched path "
                                            "%s (line %d); quarantined files would be picked up "
                                            "as uploads",
                                            w->path, w->quarantine, o->path, o->line);
                        if (w->quarantine && path_is_below_or_equal(w->quarantine, o->output))
                                return fail(p, config_setting_get_member(s, "quarantine"), -EINVAL,
                                            "watch '%s': quarantine %s is inside output %s of "
                                            "watch '%s' (line %d)",
                                            w->path, w->quarantine, o->output, o->path, o->line);
                }
        }
        return 0;
}

static int parse_watches(struct parser *p, const config_setting_t *root, struct config *c)
{
        const config_setting_t *s = config_setting_get_member(root, "watch");
        int n, r;

        if (!s)
                return fail(p, NULL, -EINVAL,
                            "no watch defined: watch = ( { path = ...; output = ...; pipeline = "
                            "...; } );");
        if (!config_setting_is_list(s))
                return fail(p, s, -EINVAL,
                            "'watch' must be a list of groups: watch = ( { path = ...; } );");
        n = config_setting_length(s);
        if (n < 1)
                return fail(p, s, -EINVAL, "'watch' is empty: at least one watch is needed");

        c->watches = calloc((size_t)n, sizeof *c->watches);
        if (!c->watches)
                return oom(p);
        for (int i = 0; i < n; i++) {
                r = parse_watch(p, c, config_setting_get_elem(s, i), i, &c->watches[i]);
                if (r < 0)
                        return r;
                c->n_watches++;
        }
        return check_watch_overlaps(p, s, c);
}

static int parse_limits(struct parser *p, const config_setting_t *root, struct config *c)
{
        static const char *const keys[] = { "max_file_bytes",  "max_pixels",
                                            "job_timeout",     "worker_memory",
                                            "worker_max_jobs", "allow_hardlinks",
                                            "allow_heif",      NULL };
        const config_setting_t *s = config_setting_get_member(root, "limits");
        long long v = 0;
        int r;

        if (!s)
                return 0;
        if (!config_setting_is_group(s))
                return fail(p, s, -EINVAL, "'limits' must be a group: limits = { ... };");
        r = check_keys(p, s, keys, "", " in limits");
        if (r < 0)
                return r;

        r = get_int_range(p, s, "max_file_bytes", "limits: ", MAX_FILE_BYTES_MIN, LLONG_MAX, &v);
        if (r < 0)
                return r;
        if (r > 0)
                c->limits.max_file_bytes = (uint64_t)v;
        r = get_int_range(p, s, "max_pixels", "limits: ", 1, LLONG_MAX, &v);
        if (r < 0)
                return r;
        if (r > 0)
                c->limits.max_pixels = (uint64_t)v;
        r = get_int_range(p, s, "job_timeout", "limits: ", 1, JOB_TIMEOUT_MAX, &v);
        if (r < 0)
                return r;
        if (r > 0)
                c->limits.job_timeout_s = (unsigned)v;
        /* In MiB: enough for libvips to open a header, at most 1 TiB. */
        r = get_int_range(p, s, "worker_memory", "limits: ", 64, 1048576, &v);
        if (r < 0)
                return r;
        if (r > 0)
                c->limits.worker_memory = (uint64_t)v << 20;
        r = get_int_range(p, s, "worker_max_jobs", "limits: ", 0, 1000000, &v);
        if (r < 0)
                return r;
        if (r > 0)
                c->limits.worker_max_jobs = (unsigned)v;
        r = get_bool(p, s, "allow_hardlinks", "limits: ", &c->limits.allow_hardlinks);
        if (r < 0)
                return r;
        r = get_bool(p, s, "allow_heif", "limits: ", &c->limits.allow_heif);
        if (r < 0)
                return r;
        return 0;
}

/* degradation = { enabled = true; recover_ms = 60000;
 *                 reduced = { queued = 500; oldest_s = 300; memory = 0.85; error_rate = 0.25; };
 *                 essential = { ... }; paused = { ... }; }; */
static int parse_level(struct parser *p, const config_setting_t *group, const char *name,
                       struct health_thresholds *t)
{
        static const char *const keys[] = { "queued", "oldest_s", "memory", "error_rate", NULL };
        const config_setting_t *s = config_setting_get_member(group, name), *ns = NULL;
        _cleanup_free_ char *prefix = strdup_printf("degradation: %s: ", name);
        _cleanup_free_ char *in = strdup_printf(" in degradation.%s", name);
        long long v = 0;
        double d = 0;
        int r;

        if (!prefix || !in)
                return oom(p);
        if (!s)
                return 0;
        if (!config_setting_is_group(s))
                return fail(p, s, -EINVAL, "%smust be a group { queued = ...; }", prefix);
        r = check_keys(p, s, keys, "", in);
        if (r < 0)
                return r;
        r = get_int_range(p, s, "queued", prefix, 1, LLONG_MAX, &v);
        if (r < 0)
                return r;
        if (r > 0)
                t->queued = (uint64_t)v;
        r = get_int_range(p, s, "oldest_s", prefix, 1, 86400 * 365, &v);
        if (r < 0)
                return r;
        if (r > 0)
                t->oldest_age_us = (uint64_t)v * 1000000ULL;
        for (int k = 0; k < 2; k++) {
                const char *key = k == 0 ? "memory" : "error_rate";
                r = get_number(p, s, key, prefix, &ns, &d);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                if (!(d > 0.0 && d <= 1.0))
                        return fail(p, ns, -EINVAL, "%s'%s' must be above 0 and at most 1, not %g",
                                    prefix, key, d);
                if (k == 0)
                        t->memory_pressure = d;
                else
                        t->error_rate = d;
        }
        return 0;
}

static int parse_degradation(struct parser *p, const config_setting_t *root, struct config *c)
{
        static const char *const keys[] = { "enabled",   "recover_ms", "reduced",
                                            "essential", "paused",     NULL };
        const config_setting_t *s = config_setting_get_member(root, "degradation");
        long long v = 0;
        health *check = NULL;
        int r;

        if (!s)
                return 0;
        if (!config_setting_is_group(s))
                return fail(p, s, -EINVAL, "'degradation' must be a group: degradation = { ... };");
        r = check_keys(p, s, keys, "", " in degradation");
        if (r < 0)
                return r;
        r = get_bool(p, s, "enabled", "degradation: ", &c->degradation);
        if (r < 0)
                return r;
        r = get_int_range(p, s, "recover_ms", "degradation: ", 0, 86400000, &v);
        if (r < 0)
                return r;
        if (r > 0)
                c->health.recover_us = (uint64_t)v * 1000;
        r = parse_level(p, s, "reduced", &c->health.reduced);
        if (r >= 0)
                r = parse_level(p, s, "essential", &c->health.essential);
        if (r >= 0)
                r = parse_level(p, s, "paused", &c->health.paused);
        if (r < 0)
                return r;
        if (health_new(&c->health, &check) < 0)
                return fail(p, s, -EINVAL,
                            "degradation: each threshold must grow from reduced to essential to "
                            "paused");
        health_free(check);
        return 0;
}

/* alerts = { error_rate = 0.10; queued = 1000; oldest_s = 600; drain_s = 3600;
 *            breaker = true; degraded = true; };  0 or false turns one off. */
static int parse_alerts(struct parser *p, const config_setting_t *root, struct config *c)
{
        static const char *const keys[] = { "error_rate", "queued",   "oldest_s", "drain_s",
                                            "breaker",    "degraded", NULL };
        const config_setting_t *s = config_setting_get_member(root, "alerts"), *ns = NULL;
        struct health_alerts_config *a = &c->alerts;
        long long v = 0;
        double d = 0;
        int r;

        if (!s)
                return 0;
        if (!config_setting_is_group(s))
                return fail(p, s, -EINVAL, "'alerts' must be a group: alerts = { ... };");
        r = check_keys(p, s, keys, "", " in alerts");
        if (r < 0)
                return r;
        r = get_number(p, s, "error_rate", "alerts: ", &ns, &d);
        if (r < 0)
                return r;
        if (r > 0) {
                if (!(d >= 0.0 && d <= 1.0))
                        return fail(p, ns, -EINVAL,
                                    "alerts: 'error_rate' must be from 0 (off) to 1, not %g", d);
                a->error_rate = d;
        }
        r = get_int_range(p, s, "queued", "alerts: ", 0, LLONG_MAX, &v);
        if (r < 0)
                return r;
        if (r > 0)
                a->queued = (uint64_t)v;
        r = get_int_range(p, s, "oldest_s", "alerts: ", 0, 86400 * 365, &v);
        if (r < 0)
                return r;
        if (r > 0)
                a->oldest_us = (uint64_t)v * 1000000ULL;
        r = get_int_range(p, s, "drain_s", "alerts: ", 0, 86400 * 365, &v);
        if (r < 0)
                return r;
        if (r > 0)
                a->drain_us = (uint64_t)v * 1000000ULL;
        r = get_bool(p, s, "breaker", "alerts: ", &a->breaker);
        if (r < 0)
                return r;
        r = get_bool(p, s, "degraded", "alerts: ", &a->degraded);
        if (r < 0)
                return r;
        return 0;
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

/* http = { listen = "127.0.0.1:9118"; health_alerts = [ "breaker", "paused" ]; }; */
static int parse_http(struct parser *p, const config_setting_t *root, struct config *c)
{
        static const char *const keys[] = { "listen", "health_alerts", NULL };
        const config_setting_t *s = config_setting_get_member(root, "http"), *ls = NULL, *list;
        const char *v = NULL, *why = NULL;
        int r;

        c->http.health_alerts = (1u << _HEALTH_ALERT_MAX) - 1;
        if (!s)
                return 0;
        if (!config_setting_is_group(s))
                return fail(p, s, -EINVAL,
                            "'http' must be a group: http = { listen = \"127.0.0.1:9118\"; };");
        r = check_keys(p, s, keys, "", " in http");
        if (r < 0)
                return r;
        r = get_string(p, s, "listen", "http: ", &ls, &v);
        if (r < 0)
                return r;
        if (r > 0) {
                if (parse_listen(v, &c->http.addr, &c->http.addr_len, &why) < 0)
                        return fail(p, ls, -EINVAL, "http: listen = \"%s\": %s", v, why);
                c->http.listen = strdup(v);
                if (!c->http.listen)
                        return oom(p);
                c->http.line = (int)config_setting_source_line(ls);
        }
        list = config_setting_get_member(s, "health_alerts");
        if (!list)
                return 0;
        if (!config_setting_is_array(list) && !config_setting_is_list(list))
                return fail(p, list, -EINVAL,
                            "http: 'health_alerts' must be a list of names: [ \"breaker\" ]");
        c->http.health_alerts = 0;
        for (int i = 0; i < config_setting_length(list); i++) {
                const config_setting_t *e = config_setting_get_elem(list, (unsigned)i);
                const char *name = config_setting_get_string(e);
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
                        return fail(p, e, -EINVAL,
                                    "http: health_alerts: unknown name %s%s%s (one of %spaused)",
                                    name ? "\"" : "", name ?: "(not a string)", name ? "\"" : "",
                                    names);
                }
                c->http.health_alerts |= bit;
        }
        return 0;
}

static int parse_breaker(struct parser *p, const config_setting_t *root, struct config *c)
{
        static const char *const keys[] = { "output_failures",
                                            "worker_failure_rate",
                                            "worker_min_samples",
                                            "window_ms",
                                            "cooldown_ms",
                                            "max_cooldown_ms",
                                            NULL };
        const config_setting_t *s = config_setting_get_member(root, "breaker"), *rs = NULL;
        struct config_breaker *b = &c->breaker;
        long long v = 0;
        double rate = 0;
        int r;

        if (!s)
                return 0;
        if (!config_setting_is_group(s))
                return fail(p, s, -EINVAL, "'breaker' must be a group: breaker = { ... };");
        r = check_keys(p, s, keys, "", " in breaker");
        if (r < 0)
                return r;
        r = get_int_range(p, s, "output_failures", "breaker: ", 1, 1000, &v);
        if (r < 0)
                return r;
        if (r > 0)
                b->output_failures = (unsigned)v;
        r = get_number(p, s, "worker_failure_rate", "breaker: ", &rs, &rate);
        if (r < 0)
                return r;
        if (r > 0) {
                if (!(rate > 0.0 && rate <= 1.0))
                        return fail(p, rs, -EINVAL,
                                    "breaker: 'worker_failure_rate' must be above 0 and at most "
                                    "1, not %g",
                                    rate);
                b->worker_failure_rate = rate;
        }
        r = get_int_range(p, s, "worker_min_samples", "breaker: ", 1, 256, &v);
        if (r < 0)
                return r;
        if (r > 0)
                b->worker_min_samples = (unsigned)v;
        r = get_int_range(p, s, "window_ms", "breaker: ", 1000, 86400000, &v);
        if (r < 0)
                return r;
        if (r > 0)
                b->window_ms = (unsigned)v;
        r = get_int_range(p, s, "cooldown_ms", "breaker: ", 10, 86400000, &v);
        if (r < 0)
                return r;
        if (r > 0)
                b->cooldown_ms = (unsigned)v;
        r = get_int_range(p, s, "max_cooldown_ms", "breaker: ", 10, 86400000, &v);
        if (r < 0)
                return r;
        if (r > 0)
                b->max_cooldown_ms = (unsigned)v;
        if (b->max_cooldown_ms < b->cooldown_ms)
                return fail(p, s, -EINVAL,
                            "breaker: 'max_cooldown_ms' (%u) must not be less than "
                            "'cooldown_ms' (%u)",
                            b->max_cooldown_ms, b->cooldown_ms);
        return 0;
}

static int parse_retry(struct parser *p, const config_setting_t *root, struct config *c)
{
        static const char *const keys[] = { "max_attempts", "base_delay_ms", "max_delay_ms",
                                            "jitter", NULL };
        const config_setting_t *s = config_setting_get_member(root, "retry");
        const config_setting_t *js = NULL;
        long long v = 0;
        double jitter = 0.0;
        int r;

        if (!s)
                return 0;
        if (!config_setting_is_group(s))
                return fail(p, s, -EINVAL, "'retry' must be a group: retry = { ... };");
        r = check_keys(p, s, keys, "", " in retry");
        if (r < 0)
                return r;

        r = get_int_range(p, s, "max_attempts", "retry: ", 1, RETRY_ATTEMPTS_MAX, &v);
        if (r < 0)
                return r;
        if (r > 0)
                c->retry.max_attempts = (unsigned)v;
        r = get_int_range(p, s, "base_delay_ms", "retry: ", 1, RETRY_DELAY_MAX_MS, &v);
        if (r < 0)
                return r;
        if (r > 0)
                c->retry.base_delay_ms = (unsigned)v;
        r = get_int_range(p, s, "max_delay_ms", "retry: ", 1, RETRY_DELAY_MAX_MS, &v);
        if (r < 0)
                return r;
        if (r > 0)
                c->retry.max_delay_ms = (unsigned)v;
        if (c->retry.max_delay_ms < c->retry.base_delay_ms)
                return fail(p, s, -EINVAL,
                            "retry: 'max_delay_ms' (%u) must not be less than 'base_delay_ms' "
                            "(%u)",
                            c->retry.max_delay_ms, c->retry.base_delay_ms);

        r = get_number(p, s, "jitter", "retry: ", &js, &jitter);
        if (r < 0)
                return r;
        if (r > 0) {
                if (!(jitter >= 0.0 && jitter <= 1.0))
                        return fail(p, js, -EINVAL,
                                    "retry: 'jitter' must be between 0 and 1, not %g", jitter);
                c->retry.jitter = jitter;
        }
        return 0;
}

static unsigned default_workers(void)
{
        long n = sysconf(_SC_NPROCESSORS_ONLN);

        if (n < 1)
                return 1;
        if (n > WORKERS_MAX)
                return WORKERS_MAX;
        return (unsigned)n;
}

static int parse_root(struct parser *p, const config_setting_t *root, struct config *c)
{
        static const char *const keys[] = { "state_dir",
                                            "socket",
                                            "workers",
                                            "background",
                                            "limits",
                                            "retry",
                                            "breaker",
                                            "prune_after_days",
                                            "control_group",
                                            "degradation",
                                            "alerts",
                                            "watch",
                                            "pipelines",
                                            "unwatched_scan_interval",
                                            "read_group",
                                            "http",
                                            NULL };
        long long days = 0, interval = 0;
        const config_setting_t *s = NULL;
        const char *v = NULL;
        long long workers = 0;
        int r;

        r = check_keys(p, root, keys, "", "");
        if (r < 0)
                return r;

        r = get_dir(p, root, "state_dir", "", &c->state_dir);
        if (r < 0)
                return r;
        if (r > 0) {
                s = config_setting_get_member(root, "state_dir");
                c->state_dir_line = (int)config_setting_source_line(s);
        }
        if (r == 0) {
                c->state_dir = strdup(CONFIG_DEFAULT_STATE_DIR);
                if (!c->state_dir)
                        return oom(p);
        }

        r = get_string(p, root, "socket", "", &s, &v);
        if (r < 0)
                return r;
        if (r == 0)
                v = CONFIG_DEFAULT_SOCKET;
        else if (v[0] != '/' || v[strlen(v) - 1] == '/')
                return fail(p, s, -EINVAL, "'socket' must be an absolute file path, not \"%s\"", v);
        else if (strlen(v) >= sizeof(((struct sockaddr_un *)NULL)->sun_path))
                return fail(p, s, -EINVAL, "'socket' path is too long (at most %zu bytes): %s",
                            sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1, v);
        c->socket = strdup(v);
        if (!c->socket)
                return oom(p);

        r = get_int_range(p, root, "workers", "", 1, WORKERS_MAX, &workers);
        if (r < 0)
                return r;
        c->workers = r > 0 ? (unsigned)workers : default_workers();

        r = get_colour(p, root, "background", "", p->background);
        if (r < 0)
                return r;

        r = parse_limits(p, root, c);
        if (r < 0)
                return r;
        r = parse_retry(p, root, c);
        if (r < 0)
                return r;
        r = parse_breaker(p, root, c);
        if (r < 0)
                return r;
        r = parse_degradation(p, root, c);
        if (r < 0)
                return r;
        r = parse_alerts(p, root, c);
        if (r < 0)
                return r;
        r = parse_http(p, root, c);
        if (r < 0)
                return r;
        r = get_int_range(p, root, "prune_after_days", "", 0, 36500, &days);
        if (r < 0)
                return r;
        if (r > 0)
                c->prune_after_days = (unsigned)days;
        r = get_int_range(p, root, "unwatched_scan_interval", "", 1, 86400, &interval);
        if (r < 0)
                return r;
        if (r > 0)
                c->unwatched_scan_interval_s = (unsigned)interval;
        r = get_string(p, root, "control_group", "", &s, &v);
        if (r < 0)
                return r;
        if (r > 0) {
                if (!*v)
                        return fail(p, s, -EINVAL, "'control_group' must name a group");
                c->control_group = strdup(v);
                if (!c->control_group)
                        return oom(p);
        }
        r = get_string(p, root, "read_group", "", &s, &v);
        if (r < 0)
                return r;
        if (r > 0) {
                if (!*v)
                        return fail(p, s, -EINVAL, "'read_group' must name a group");
                c->read_group = strdup(v);
                if (!c->read_group)
                        return oom(p);
        }
        r = parse_pipelines(p, root, c);
        if (r < 0)
                return r;
        r = parse_watches(p, root, c);
        if (r < 0)
                return r;
        for (size_t i = 0; i < c->n_watches; i++)
                if (path_is_below_or_equal(c->state_dir, c->watches[i].path))
                        return fail(p, config_setting_get_member(root, "state_dir"), -EINVAL,
                                    "state_dir %s is inside watched path %s (line %d); the "
                                    "ledger's files would be picked up as uploads",
                                    c->state_dir, c->watches[i].path, c->watches[i].line);
        return 0;
}

/* Sets *ret_error (when not NULL) to a formatted message, or NULL if that fails. */
_printf_(2, 3) static void set_error(char **ret_error, const char *fmt, ...)
{
        va_list ap;

        if (!ret_error)
                return;
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
                *ret_error = NULL;
        va_end(ap);
}

/* Checks that path can be opened for reading and is not a directory; sets the error. */
static int check_readable(const char *path, char **ret_error)
{
        _cleanup_close_ int fd = -1;
        struct stat st;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0) {
                int r = negative_errno();

                set_error(ret_error, "%s: cannot read: %s", path, strerror(-r));
                return r;
        }
        if (S_ISDIR(st.st_mode)) {
                set_error(ret_error, "%s: cannot read: %s", path, strerror(EISDIR));
                return -EISDIR;
        }
        return 0;
}

int config_load(const char *path, struct config **ret, char **ret_error)
{
        _cleanup_(config_destroyp) config_t *cfg = NULL;
        _cleanup_free_ char *dir = NULL;
        _cleanup_(config_freep) struct config *c = NULL;
        config_t cfg_storage;
        struct parser p = { .file = path };
        char *slash;
        int r;

        assert(path);
        assert(ret);

        r = check_readable(path, ret_error);
        if (r < 0)
                return r;

        /* @include "x" is resolved next to the file, not in the current directory. */
        dir = strdup(path);
        if (!dir) {
                set_error(ret_error, "%s: out of memory", path);
                return -ENOMEM;
        }
        slash = strrchr(dir, '/');
        if (slash)
                *(slash == dir ? slash + 1 : slash) = '\0';

        config_init(&cfg_storage);
        cfg = &cfg_storage;
        if (slash)
                config_set_include_dir(cfg, dir);

        if (!config_read_file(cfg, path)) {
                if (config_error_type(cfg) == CONFIG_ERR_FILE_IO) {
                        set_error(ret_error, "%s: cannot read: %s",
                                  config_error_file(cfg) ? config_error_file(cfg) : path,
                                  config_error_text(cfg) ? config_error_text(cfg) : "I/O error");
                        return -EIO;
                }
                set_error(ret_error, "%s:%d: syntax error: %s",
                          config_error_file(cfg) ? config_error_file(cfg) : path,
                          config_error_line(cfg),
                          config_error_text(cfg) ? config_error_text(cfg) : "?");
                return -EBADMSG;
        }

        c = calloc(1, sizeof *c);
        if (!c) {
                set_error(ret_error, "%s: out of memory", path);
                return -ENOMEM;
        }
        c->limits = (struct config_limits){
                .max_file_bytes = 256ULL * 1024 * 1024,
                .max_pixels = 100000000ULL,
                .job_timeout_s = 120,
                .worker_memory = 1024ULL << 20,
                .worker_max_jobs = 200,
                .allow_heif = true,
        };
        c->breaker = (struct config_breaker){
                .output_failures = 3,
                .worker_failure_rate = 0.5,
                .worker_min_samples = 10,
                .window_ms = 60000,
                .cooldown_ms = 30000,
                .max_cooldown_ms = 600000,
        };
        c->prune_after_days = 30;
        c->unwatched_scan_interval_s = 60;
        c->degradation = true;
        health_config_init(&c->health);
        health_alerts_config_init(&c->alerts);
        c->retry = (struct config_retry){
                .max_attempts = 5,
                .base_delay_ms = 1000,
                .max_delay_ms = 300000,
                .jitter = 0.2,
        };
        memcpy(p.background, default_background, sizeof p.background);

        c->file = strdup(path);
        if (!c->file)
                r = oom(&p);
        else
                r = parse_root(&p, config_root_setting(cfg), c);
        if (r < 0) {
                if (ret_error)
                        *ret_error = TAKE_PTR(p.error);
                free(p.error);
                return r;
        }

        assert(!p.error);
        memcpy(c->background, p.background, sizeof c->background);
        *ret = TAKE_PTR(c);
        return 0;
}

struct config *config_free(struct config *c)
{
        if (!c)
                return NULL;

        for (size_t i = 0; i < c->n_watches; i++) {
                free(c->watches[i].path);
                free(c->watches[i].output);
                free(c->watches[i].pipeline_name);
                free(c->watches[i].quarantine);
                free(c->watches[i].on_done);
                free(c->watches[i].on_dead);
        }
        free(c->watches);
        free(c->control_group);
        free(c->read_group);
        free(c->http.listen);
        for (size_t i = 0; i < c->n_pipelines; i++) {
                free(c->pipelines[i].name);
                free(c->pipelines[i].variants);
        }
        free(c->pipelines);
        free(c->file);
        free(c->state_dir);
        free(c->socket);
        free(c);
        return NULL;
}

const struct pipeline *config_find_pipeline(const struct config *c, const char *name)
{
        assert(c);

        if (!name)
                return NULL;
        for (size_t i = 0; i < c->n_pipelines; i++)
                if (strcmp(c->pipelines[i].name, name) == 0)
                        return &c->pipelines[i];
        return NULL;
}

/* mkdir -p: creates path and its missing parents with `mode`. Returns 0 or -errno. */
static int mkdir_parents(const char *path, mode_t mode)
{
        _cleanup_free_ char *buf = strdup(path);

        if (!buf)
                return -ENOMEM;
        for (char *c = buf + 1;; c++) {
                char saved = *c;

                if (saved != '/' && saved != '\0')
                        continue;
                *c = '\0';
                if (mkdir(buf, mode) < 0 && errno != EEXIST)
                        return negative_errno();
                *c = saved;
                if (saved == '\0')
                        break;
        }
        return 0;
}

/*
 * Checks that dir is a directory in which files can be created, by creating and removing a
 * probe file (access(W_OK) says yes to root even on a read-only mount).
 */
static int check_dir_writable(const char *dir)
{
        _cleanup_free_ char *probe = NULL;
        struct stat st;
        int fd;

        if (stat(dir, &st) < 0)
                return negative_errno();
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        if (asprintf(&probe, "%s/.imgd-probe-XXXXXX", dir) < 0) {
                probe = NULL;
                return -ENOMEM;
        }
        fd = mkstemp(probe);
        if (fd < 0)
                return negative_errno();
        close(fd);
        if (unlink(probe) < 0)
                return negative_errno();
        return 0;
}

/* Creates dir with parents if needed and checks it is a writable directory. */
static int ensure_dir_writable(const char *dir, mode_t mode)
{
        int r = mkdir_parents(dir, mode);

        if (r < 0)
                return r;
        return check_dir_writable(dir);
}

/*
 * Whether the file system of path, or of its nearest existing parent when path does not exist
 * yet, is mounted read-only: returns -EROFS if so, 0 if not, or another negative errno. Reads
 * the mount's flags (statvfs ST_RDONLY), so root is told too, and nothing is created: for
 * folders imgd writes only now and then (a watch it moves dead sources out of, a quarantine).
 */
static int check_not_read_only(const char *path)
{
        _cleanup_free_ char *buf = strdup(path);
        struct statvfs sv;

        if (!buf)
                return -ENOMEM;
        while (statvfs(buf, &sv) < 0) {
                char *slash = strrchr(buf, '/');

                if (errno != ENOENT || !slash || slash == buf)
                        return negative_errno();
                *slash = '\0';
        }
        return (sv.f_flag & ST_RDONLY) ? -EROFS : 0;
}

/*
 * Sets *ret_error to "WHERE: WHAT PATH: cause" for a folder imgd must write. A read-only file
 * system is what a path outside the unit's ReadWritePaths= looks like under ProtectSystem=strict
 * (where --check-config run from a shell saw it writable), so that message says what to do.
 */
static void set_write_error(char **ret_error, const char *where, const char *what, const char *path,
                            int r)
{
        if (r != -EROFS) {
                set_error(ret_error, "%s: %s %s: %s", where, what, path, strerror(-r));
                return;
        }
        set_error(ret_error,
                  "%s: %s '%s' is on a read-only file system (EROFS) and imgd must write there; "
                  "under systemd, add it to the unit: `systemctl edit imgd` and put `[Service]` / "
                  "`ReadWritePaths=%s` (and, outside /srv, `NoExecPaths=%s`), then restart imgd",
                  where, what, path, path, path);
}

/*
 * Checks the watermark image of variant v: a regular file that can be read, not over
 * VARIANT_WATERMARK_FILE_MAX bytes, whose first bytes are those of a format the workers
 * decode. Whether it decodes completely is only known to a worker (the daemon never decodes
 * images); one that does not fails its jobs with a message naming the file.
 */
static int check_watermark(const struct config *c, const struct pipeline *pl,
                           const struct variant *v, char **ret_error)
{
        const char *path = v->watermark.image;
        unsigned char magic[IMAGE_FORMAT_SNIFF_BYTES];
        _cleanup_close_ int fd = -1;
        struct stat st;
        ssize_t k;
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 || fstat(fd, &st) < 0) {
                r = negative_errno();
                set_error(ret_error, "%s: pipeline '%s': variant '%s': watermark image %s: %s",
                          c->file, pl->name, v->name, path, strerror(-r));
                return r;
        }
        if (!S_ISREG(st.st_mode)) {
                set_error(ret_error,
                          "%s: pipeline '%s': variant '%s': watermark image %s: not a regular "
                          "file",
                          c->file, pl->name, v->name, path);
                return -EINVAL;
        }
        if (st.st_size > VARIANT_WATERMARK_FILE_MAX) {
                set_error(ret_error,
                          "%s: pipeline '%s': variant '%s': watermark image %s: %lld bytes, over "
                          "the limit of %d",
                          c->file, pl->name, v->name, path, (long long)st.st_size,
                          VARIANT_WATERMARK_FILE_MAX);
                return -EFBIG;
        }
        do
                k = pread(fd, magic, sizeof magic, 0);
        while (k < 0 && errno == EINTR);
        if (k < 0) {
                r = negative_errno();
                set_error(ret_error, "%s: pipeline '%s': variant '%s': watermark image %s: %s",
                          c->file, pl->name, v->name, path, strerror(-r));
                return r;
        }
        if (image_format_sniff(magic, (size_t)k) == IMAGE_FORMAT_UNKNOWN) {
                set_error(ret_error,
                          "%s: pipeline '%s': variant '%s': watermark image %s: not a supported "
                          "image (PNG, JPEG, WebP, GIF, TIFF, HEIF or AVIF)",
                          c->file, pl->name, v->name, path);
                return -EMEDIUMTYPE;
        }
        return 0;
}

/* A directory's identity on the file system. */
struct dir_id {
        dev_t dev;
        ino_t ino;
};

/*
 * A configured directory as the file system has it, for the overlap checks of
 * config_check_paths(): two names of one directory (through a symbolic link, or a bind mount)
 * have the same `real` path or the same device and inode.
 */
struct resolved_dir {
        char *real;         /* the nearest existing ancestor-or-self with symbolic links resolved
                             * (realpath), then the components below it that do not exist yet */
        char *shown;        /* "NAME", or "NAME (resolved: REAL)" when they differ; for messages */
        bool exists;        /* the directory itself exists: ids[0] is its own identity */
        struct dir_id *ids; /* that ancestor-or-self and each of its parents up to "/" */
        size_t n_ids;
};

static void resolved_dir_done(struct resolved_dir *d)
{
        free(d->real);
        free(d->shown);
        free(d->ids);
        *d = (struct resolved_dir){ 0 };
}

/*
 * Resolves the normalised absolute path `name` (which need not exist) into *ret. Returns 0,
 * -ENOMEM, -ENOLINK when a symbolic link on the way points to nothing, or the errno of
 * realpath() other than ENOENT (a component that is a file: -ENOTDIR; a loop of links:
 * -ELOOP; -EACCES); *ret is written only on success.
 */
static int resolve_dir(const char *name, struct resolved_dir *ret)
{
        _cleanup_free_ char *prefix = strdup(name), *real = NULL, *full = NULL, *up = NULL;
        _cleanup_free_ char *shown = NULL;
        _cleanup_free_ struct dir_id *ids = NULL;
        size_t cut = strlen(name), n_ids = 0;
        int r;

        if (!prefix)
                return -ENOMEM;
        /* The nearest ancestor-or-self that exists; "/" always does. */
        while (!(real = realpath(prefix, NULL))) {
                char *slash = strrchr(prefix, '/');
                struct stat st;

                if (errno != ENOENT || !slash || strcmp(prefix, "/") == 0)
                        return negative_errno();
                if (lstat(prefix, &st) == 0)
                        return -ENOLINK; /* there, but a symbolic link to nothing */
                cut = (size_t)(slash - prefix);
                if (slash == prefix)
                        slash[1] = '\0';
                else
                        *slash = '\0';
        }
        /* "/" and "/a" make "/a", not "//a". */
        r = asprintf(&full, "%s%s", strcmp(real, "/") == 0 && name[cut] ? "" : real, name + cut);
        if (r < 0) {
                full = NULL;
                return -ENOMEM;
        }

        /* The identities of real's existing part and of each of its parents. */
        up = strdup(real);
        if (!up)
                return -ENOMEM;
        ids = calloc(strlen(up) + 1, sizeof *ids); /* at most one per slash, plus one */
        if (!ids)
                return -ENOMEM;
        for (;;) {
                struct stat st;
                char *slash;

                if (stat(up, &st) < 0)
                        break; /* unreadable: compared by name only from here up */
                ids[n_ids++] = (struct dir_id){ .dev = st.st_dev, .ino = st.st_ino };
                slash = strrchr(up, '/');
                if (!slash || strcmp(up, "/") == 0)
                        break;
                if (slash == up)
                        slash[1] = '\0';
                else
                        *slash = '\0';
        }

        if (strcmp(full, name) == 0)
                shown = strdup(name);
        else if (asprintf(&shown, "%s (resolved: %s)", name, full) < 0)
                shown = NULL;
        if (!shown)
                return -ENOMEM;

        *ret = (struct resolved_dir){
                .real = TAKE_PTR(full),
                .shown = TAKE_PTR(shown),
                .exists = name[cut] == '\0',
                .ids = TAKE_PTR(ids),
                .n_ids = n_ids,
        };
        return 0;
}

enum {
        DIR_APART = 0,
        DIR_BY_NAME,  /* below or at, by the resolved names */
        DIR_BY_INODE, /* below or at, found only by device and inode (a bind mount) */
};

/* Whether x is y or below it: DIR_APART, DIR_BY_NAME or DIR_BY_INODE. */
static int dir_within(const struct resolved_dir *x, const struct resolved_dir *y)
{
        if (path_is_below_or_equal(x->real, y->real))
                return DIR_BY_NAME;
        /* A directory that does not exist yet holds nothing that exists. */
        if (!y->exists || y->n_ids == 0)
                return DIR_APART;
        for (size_t i = 0; i < x->n_ids; i++)
                if (x->ids[i].dev == y->ids[0].dev && x->ids[i].ino == y->ids[0].ino)
                        return DIR_BY_INODE;
        return DIR_APART;
}

/* Whether x and y are one directory: DIR_APART, DIR_BY_NAME or DIR_BY_INODE. */
static int dir_same(const struct resolved_dir *x, const struct resolved_dir *y)
{
        if (strcmp(x->real, y->real) == 0)
                return DIR_BY_NAME;
        if (x->exists && y->exists && x->n_ids > 0 && y->n_ids > 0 &&
            x->ids[0].dev == y->ids[0].dev && x->ids[0].ino == y->ids[0].ino)
                return DIR_BY_INODE;
        return DIR_APART;
}

static const char *how(int within)
{
        return within == DIR_BY_INODE ? " (the same directory by device and inode: a bind mount?)"
                                      : "";
}

/* The resolved directories of one watch; quarantine.real is NULL when it has none. */
struct resolved_watch {
        struct resolved_dir path, output, quarantine;
};

static void resolved_watches_free(struct resolved_watch *rw, size_t n)
{
        for (size_t i = 0; rw && i < n; i++) {
                resolved_dir_done(&rw[i].path);
                resolved_dir_done(&rw[i].output);
                resolved_dir_done(&rw[i].quarantine);
        }
        free(rw);
}

/*
 * The overlap checks of config_check_paths() on the resolved directories (see config.h).
 * Touches nothing. Returns 0, or a negative errno with "FILE:LINE: problem" in *ret_error,
 * LINE being that of the watch (or of state_dir) at fault; the message names the other
 * watch and its line.
 */
static int check_resolved_overlaps(const struct config *c, char **ret_error)
{
        struct resolved_watch *rw = NULL;
        struct resolved_dir state = { 0 };
        int r = 0;

        rw = calloc(c->n_watches, sizeof *rw);
        if (!rw) {
                set_error(ret_error, "%s: out of memory", c->file);
                return -ENOMEM;
        }
        for (size_t i = 0; i < c->n_watches; i++) {
                const struct watch_config *w = &c->watches[i];
                const char *what = "watch path", *name = w->path;

                r = resolve_dir(w->path, &rw[i].path);
                if (r >= 0) {
                        what = "output";
                        name = w->output;
                        r = resolve_dir(w->output, &rw[i].output);
                }
                if (r >= 0 && w->quarantine) {
                        what = "quarantine";
                        name = w->quarantine;
                        r = resolve_dir(w->quarantine, &rw[i].quarantine);
                }
                if (r < 0) {
                        set_error(ret_error, "%s:%d: %s %s: %s", c->file, w->line, what, name,
                                  r == -ENOLINK ? "a symbolic link on the way points to nothing"
                                                : strerror(-r));
                        goto done;
                }
        }
        r = resolve_dir(c->state_dir, &state);
        if (r < 0) {
                set_error(ret_error, "%s: state_dir %s: %s", c->file, c->state_dir,
                          r == -ENOLINK ? "a symbolic link on the way points to nothing"
                                        : strerror(-r));
                goto done;
        }

        r = -EINVAL;
        for (size_t i = 0; i < c->n_watches; i++) {
                const struct watch_config *w = &c->watches[i];
                const struct resolved_watch *a = &rw[i];
                int k;

                for (size_t j = 0; j < c->n_watches; j++) {
                        const struct watch_config *o = &c->watches[j];
                        const struct resolved_watch *b = &rw[j];

                        k = j < i ? dir_same(&a->path, &b->path) : DIR_APART;
                        if (k) {
                                set_error(ret_error,
                                          "%s:%d: watch '%s': path %s is the same directory as "
                                          "watch '%s' (line %d)%s",
                                          c->file, w->line, w->path, a->path.shown, o->path,
                                          o->line, how(k));
                                goto done;
                        }
                        k = dir_within(&a->output, &b->path);
                        if (k) {
                                set_error(ret_error,
                                          "%s:%d: watch '%s': output %s is inside watched path "
                                          "%s (line %d)%s; outputs would be picked up as uploads",
                                          c->file, w->line, w->path, a->output.shown, b->path.shown,
                                          o->line, how(k));
                                goto done;
                        }
                        k = dir_within(&a->path, &b->output);
                        if (k) {
                                set_error(ret_error,
                                          "%s:%d: watch '%s': watched path %s is inside output "
                                          "%s of watch '%s' (line %d)%s; outputs would be picked "
                                          "up as uploads",
                                          c->file, w->line, w->path, a->path.shown, b->output.shown,
                                          o->path, o->line, how(k));
                                goto done;
                        }
                        k = j != i && o->recursive && !dir_same(&a->path, &b->path)
                                    ? dir_within(&a->path, &b->path)
                                    : DIR_APART;
                        if (k) {
                                set_error(ret_error,
                                          "%s:%d: watch '%s': path %s is inside watch '%s' (line "
                                          "%d)%s, which is recursive; files below it would belong "
                                          "to both watches",
                                          c->file, w->line, w->path, a->path.shown, o->path,
                                          o->line, how(k));
                                goto done;
                        }
                        if (!w->quarantine)
                                continue;
                        k = dir_within(&a->quarantine, &b->path);
                        if (!k)
                                k = dir_within(&b->path, &a->quarantine);
                        if (k) {
                                set_error(ret_error,
                                          "%s:%d: watch '%s': quarantine %s overlaps watched path "
                                          "%s (line %d)%s; quarantined files would be picked up "
                                          "as uploads",
                                          c->file, w->line, w->path, a->quarantine.shown,
                                          b->path.shown, o->line, how(k));
                                goto done;
                        }
                        k = dir_within(&a->quarantine, &b->output);
                        if (k) {
                                set_error(ret_error,
                                          "%s:%d: watch '%s': quarantine %s is inside output %s "
                                          "of watch '%s' (line %d)%s",
                                          c->file, w->line, w->path, a->quarantine.shown,
                                          b->output.shown, o->path, o->line, how(k));
                                goto done;
                        }
                }
                k = dir_within(&state, &a->path);
                if (k) {
                        if (c->state_dir_line > 0)
                                set_error(ret_error,
                                          "%s:%d: state_dir %s is inside watched path %s (line "
                                          "%d)%s; the ledger's files would be picked up as uploads",
                                          c->file, c->state_dir_line, state.shown, a->path.shown,
                                          w->line, how(k));
                        else
                                set_error(ret_error,
                                          "%s: state_dir %s is inside watched path %s (line %d)%s; "
                                          "the ledger's files would be picked up as uploads",
                                          c->file, state.shown, a->path.shown, w->line, how(k));
                        goto done;
                }
        }
        r = 0;
done:
        resolved_dir_done(&state);
        resolved_watches_free(rw, c->n_watches);
        return r;
}

int config_check_paths(const struct config *c, char **ret_error)
{
        _cleanup_free_ char *socket_dir = NULL;
        struct stat st;
        char *slash;
        int r;

        assert(c);

        for (size_t i = 0; i < c->n_watches; i++) {
                const struct watch_config *w = &c->watches[i];

                /* The watcher opens its folders without following a last symbolic link
                 * (O_NOFOLLOW, IN_DONT_FOLLOW), so such a watch would fail at start. */
                if (lstat(w->path, &st) == 0 && S_ISLNK(st.st_mode)) {
                        _cleanup_free_ char *target = realpath(w->path, NULL);

                        set_error(ret_error,
                                  "%s:%d: watch path %s is a symbolic link%s%s; imgd does not "
                                  "follow it: write the directory it points to instead",
                                  c->file, w->line, w->path, target ? " to " : "",
                                  target ? target : "");
                        return -ELOOP;
                }
                if (stat(w->path, &st) < 0)
                        r = negative_errno();
                else
                        r = S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
                if (r < 0) {
                        set_error(ret_error, "%s:%d: watch path %s: %s", c->file, w->line, w->path,
                                  strerror(-r));
                        return r;
                }
        }

        /* Before anything is created: an output made inside a watched tree would be seen. */
        r = check_resolved_overlaps(c, ret_error);
        if (r < 0)
                return r;

        for (size_t i = 0; i < c->n_watches; i++) {
                const struct watch_config *w = &c->watches[i];
                char where[PATH_MAX + 16];

                snprintf(where, sizeof where, "%s:%d", c->file, w->line);
                r = ensure_dir_writable(w->output, 0755);
                if (r < 0) {
                        set_write_error(ret_error, where, "output", w->output, r);
                        return r;
                }
                /* Dead sources are moved out of the watched folder into the quarantine. */
                if (!w->quarantine)
                        continue;
                r = check_not_read_only(w->path);
                if (r < 0) {
                        set_write_error(ret_error, where, "watch", w->path, r);
                        return r;
                }
                r = check_not_read_only(w->quarantine);
                if (r < 0) {
                        set_write_error(ret_error, where, "quarantine", w->quarantine, r);
                        return r;
                }
        }

        for (size_t i = 0; i < c->n_pipelines; i++)
                for (size_t j = 0; j < c->pipelines[i].n_variants; j++) {
                        const struct variant *v = &c->pipelines[i].variants[j];

                        if (v->watermark.kind != VARIANT_WATERMARK_IMAGE)
                                continue;
                        r = check_watermark(c, &c->pipelines[i], v, ret_error);
                        if (r < 0)
                                return r;
                }

        r = ensure_dir_writable(c->state_dir, 0750);
        if (r < 0) {
                set_write_error(ret_error, c->file, "state_dir", c->state_dir, r);
                return r;
        }

        /* A group named in the file must exist (the default "imgd" need not). */
        for (size_t i = 0; i < 2; i++) {
                const char *key = i == 0 ? "control_group" : "read_group";
                const char *name = i == 0 ? c->control_group : c->read_group;

                if (name && !getgrnam(name)) {
                        set_error(ret_error, "%s: %s '%s': no such group", c->file, key, name);
                        return -EINVAL;
                }
        }

        socket_dir = strdup(c->socket);
        if (!socket_dir) {
                set_error(ret_error, "%s: out of memory", c->file);
                return -ENOMEM;
        }
        slash = strrchr(socket_dir, '/');
        if (slash && slash != socket_dir) {
                *slash = '\0';
                r = mkdir_parents(socket_dir, 0755);
                if (r >= 0 && stat(socket_dir, &st) < 0)
                        r = negative_errno();
                else if (r >= 0 && !S_ISDIR(st.st_mode))
                        r = -ENOTDIR;
                if (r < 0) {
                        set_write_error(ret_error, c->file, "socket directory", socket_dir, r);
                        return r;
                }
        }
        return 0;
}
