/* arena.c — bump allocator over a list of blocks (see arena.h). Blocks grow to fit large
 * requests; reset keeps the first block so a worker's arena stops allocating once warm. */
#include "arena.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define ALIGN 16

struct block {
    struct block *next;
    size_t size, used;
    _Alignas(ALIGN) unsigned char data[];
};

struct cn_arena {
    struct block *head;    /* current block (most recent) */
    struct block *first;   /* the oldest block, kept on reset */
    size_t chunk;
    size_t used;
};

static struct block *block_new(size_t size)
{
    struct block *b = cn_malloc(sizeof *b + size);
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

struct cn_arena *cn_arena_new(size_t chunk)
{
    struct cn_arena *a = cn_calloc(1, sizeof *a);
    a->chunk = chunk ? chunk : 16384;
    a->head = a->first = block_new(a->chunk);
    return a;
}

void cn_arena_free(struct cn_arena *a)
{
    if (a == NULL)
        return;
    for (struct block *b = a->head, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(a);
}

void cn_arena_reset(struct cn_arena *a)
{
    struct block *b = a->head;
    while (b != a->first) {
        struct block *next = b->next;
        free(b);
        b = next;
    }
    a->head = a->first;
    a->first->used = 0;
    a->used = 0;
}

void *cn_arena_alloc(struct cn_arena *a, size_t n)
{
    size_t need = (n + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if (need == 0)
        need = ALIGN;
    if (a->head->used + need > a->head->size) {
        size_t size = need > a->chunk ? need : a->chunk;
        struct block *b = block_new(size);
        b->next = a->head;
        a->head = b;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += need;
    a->used += need;
    return p;
}

void *cn_arena_calloc(struct cn_arena *a, size_t n)
{
    void *p = cn_arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

char *cn_arena_strndup(struct cn_arena *a, const char *s, size_t n)
{
    char *p = cn_arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

char *cn_arena_strdup(struct cn_arena *a, const char *s) { return cn_arena_strndup(a, s, strlen(s)); }

char *cn_arena_printf(struct cn_arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return cn_arena_strdup(a, "");
    char *p = cn_arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

size_t cn_arena_used(const struct cn_arena *a) { return a->used; }

static void *pb_alloc(void *data, size_t size) { return cn_arena_alloc(data, size); }
static void pb_free(void *data, void *p) { (void)data; (void)p; }

void cn_arena_allocator(struct cn_arena *a, ProtobufCAllocator *out)
{
    out->alloc = pb_alloc;
    out->free = pb_free;
    out->allocator_data = a;
}
