/* CRC-32C (Castagnoli), the checksum of cached blocks: the SSE4.2 instruction
 * where the CPU has it (tens of GB/s, so verifying every block served costs
 * almost nothing), a table otherwise. */
#ifndef MODELFS_CRC32C_H
#define MODELFS_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C of @len bytes at @data, continuing from @crc (0 to start). */
uint32_t crc32c(uint32_t crc, const void *data, size_t len);

#endif
