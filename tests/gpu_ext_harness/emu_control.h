// Test-side controls of the fiber runtime (emu.cpp), for the harness's driver only.
#pragma once

#include <cstdint>

namespace vbemu {

struct Stats {
  uint64_t launches = 0, blocks = 0, barriers = 0, collectives = 0, switches = 0;
};

// Launches whose grid.x equals grid_x run only the blocks [first, last) (0: no filter).  Lets a
// test run the last block of a grid of 2^31 threads against lazily mapped arrays.
void set_block_filter(unsigned grid_x, uint64_t first, uint64_t last);

const Stats& stats();

}  // namespace vbemu
