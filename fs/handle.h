/* Open-file handles as the kernel holds them (fuse_file_info.fh): an index
 * into a table and a generation, never a pointer. A handle that is stale
 * (released, its slot reused) or was never given is refused, not followed.
 *
 * Each slot has a record (what the next daemon needs to serve the handle:
 * open.c's struct, copied in at add) in memory that can outlive the
 * process (keep.h), and the object this process made of it. After an
 * upgrade or a crash the new daemon adopts the slots: the handles the
 * kernel holds stay valid, their objects made again from the records on
 * first use (handle_attach).
 *
 * handle_get is lock-free (every read asks it): local slots live in chunks
 * that are allocated once and never move or go before handles_free. add,
 * del and attach take the table's lock.
 */
#ifndef MODELFS_HANDLE_H
#define MODELFS_HANDLE_H

#include <stddef.h>
#include <stdint.h>

struct handles;

#define HANDLES_MAX (1u << 16) /* open files at once */
/* The memory the slots take, for records of @rec bytes. */
#define HANDLES_SLOTS_BYTES(rec) (8 + (size_t)HANDLES_MAX * (8 + (rec)))

/* @slots: HANDLES_SLOTS_BYTES(@rec_size) bytes (keep_handles), or
 * NULL: the table's own memory. @adopt: the slots hold another daemon's
 * handles, kept. @rec_size is a multiple of 8. */
int handles_new(void *slots, size_t rec_size, int adopt, struct handles **out);
/* Frees the table, not what its handles point to. */
void handles_free(struct handles *h);
/* A handle for @p (not NULL) with record @rec. @return it (never 0), or 0:
 * the table is full or out of memory. */
uint64_t handle_add(struct handles *h, void *p, const void *rec);
/* What @fh stands for in this process, or NULL: stale, never given, or
 * adopted and not attached yet (handle_rec tells). */
void *handle_get(struct handles *h, uint64_t fh);
/* The record of live handle @fh, or NULL. */
const void *handle_rec(struct handles *h, uint64_t fh);
/* Give live handle @fh, which has no object yet, @p. @return the object it
 * has then (@p, or one another thread attached first: free @p), or NULL
 * when @fh is not live. */
void *handle_attach(struct handles *h, uint64_t fh, void *p);
/* Take @fh out of the table. @return what it stood for, or NULL. */
void *handle_del(struct handles *h, uint64_t fh);
/* Handles in use now. */
unsigned handles_count(struct handles *h);
/* The first live handle in a slot after @fh's (0: from the start), or 0. */
uint64_t handles_next(struct handles *h, uint64_t fh);

#endif
