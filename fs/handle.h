/* Open-file handles as the kernel holds them (fuse_file_info.fh): an index
 * into a table and a generation, never a pointer. A handle that is stale
 * (released, its slot reused) or was never given is refused, not followed;
 * and a table can be handed to another process, which a pointer cannot
 * (docs/design.md, "Handles").
 *
 * handle_get is lock-free (every read asks it): slots live in chunks that
 * are allocated once and never move or go before handles_free. add and del
 * (open, release) take the table's lock for its free list.
 */
#ifndef MODELFS_HANDLE_H
#define MODELFS_HANDLE_H

#include <stdint.h>

struct handles;

#define HANDLES_MAX (1u << 20) /* open files at once */

int handles_new(struct handles **out);
/* Frees the table, not what its handles point to. */
void handles_free(struct handles *h);
/* A handle for @p (not NULL). @return it (never 0), or 0: the table is full
 * or out of memory. */
uint64_t handle_add(struct handles *h, void *p);
/* What @fh stands for, or NULL when it is stale or was never given. */
void *handle_get(struct handles *h, uint64_t fh);
/* Take @fh out of the table. @return what it stood for, or NULL. */
void *handle_del(struct handles *h, uint64_t fh);
/* Handles in use now. */
unsigned handles_count(struct handles *h);
/* Take any handle out of the table: @return what it stood for, NULL when
 * none is left (at exit: files whose release never came). */
void *handles_pop(struct handles *h);

#endif
