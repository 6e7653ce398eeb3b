/* arena.h — per-request memory freed in one step.
 *
 * A service handler allocates everything for one call (the unpacked request, the
 * response, strings) from the call's arena, and the arena is reset when the call ends:
 * no per-object frees, no leaks on error paths. cn_arena_allocator() exposes an arena as
 * a ProtobufCAllocator so protobuf-c unpacks into it (its free is a no-op).
 */
#ifndef CN_ARENA_H
#define CN_ARENA_H

#include <stddef.h>
#include <protobuf-c/protobuf-c.h>

struct cn_arena;

/* Returns a new arena whose blocks are at least chunk bytes (0 = 16 KiB). */
struct cn_arena *cn_arena_new(size_t chunk);
/* Frees the arena and everything allocated from it. NULL is fine. */
void cn_arena_free(struct cn_arena *a);
/* Frees everything allocated, keeps the first block for reuse. */
void cn_arena_reset(struct cn_arena *a);
/* Returns n bytes aligned for any type; never NULL (aborts on OOM). */
void *cn_arena_alloc(struct cn_arena *a, size_t n);
void *cn_arena_calloc(struct cn_arena *a, size_t n);
char *cn_arena_strdup(struct cn_arena *a, const char *s);
char *cn_arena_strndup(struct cn_arena *a, const char *s, size_t n);
char *cn_arena_printf(struct cn_arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Bytes handed out since the last reset (for caps and tests). */
size_t cn_arena_used(const struct cn_arena *a);
/* Fills *out with an allocator that allocates from a; valid while a lives. */
void cn_arena_allocator(struct cn_arena *a, ProtobufCAllocator *out);

#endif
