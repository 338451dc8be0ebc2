// Linked into the fuzz targets that build a core::Processor for every input (with
// -Wl,--wrap=mmap64,--wrap=munmap, tests/fuzz/meson.build). A Processor maps its tables anonymously
// (LargeArray), about 280 KB per worker, most of it the per-backend counters; on a VM where
// every page fault traps to the hypervisor, mapping and faulting those pages in again for each
// input cost ~1.2 ms, five times what the input itself takes. Here an anonymous private
// read-write region that is unmapped is kept (up to kMax of them) and handed out again, zeroed
// as mmap would, for the next request of the same size. Every other mmap and munmap passes
// through. lbd itself maps its tables once, at start.

#include <sys/mman.h>
#include <sys/types.h>

#include <cstddef>
#include <cstring>

// With _FILE_OFFSET_BITS=64 (meson's default) glibc's headers call mmap64: both are wrapped.
extern "C" void* __real_mmap64(void* addr, size_t len, int prot, int flags, int fd, off_t off);
extern "C" int __real_munmap(void* addr, size_t len);

namespace {

struct Region {
  void* p;
  size_t len;
};
// Plain regions handed out and not unmapped yet, and unmapped ones kept for reuse. Only a region
// mapped here as plain is ever kept: anything else unmapped goes to the kernel.
constexpr int kMaxLive = 64;
constexpr int kMaxKept = 16;
Region live[kMaxLive];
int nlive = 0;
Region kept[kMaxKept];
int nkept = 0;

bool plain(void* addr, int prot, int flags, int fd) {
  return addr == nullptr && prot == (PROT_READ | PROT_WRITE) &&
         flags == (MAP_PRIVATE | MAP_ANONYMOUS) && fd == -1;
}

}  // namespace

extern "C" void* __wrap_mmap64(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  if (!plain(addr, prot, flags, fd)) return __real_mmap64(addr, len, prot, flags, fd, off);
  void* p = nullptr;
  for (int i = 0; i < nkept && !p; ++i) {
    if (kept[i].len != len) continue;
    p = kept[i].p;
    kept[i] = kept[--nkept];
    std::memset(p, 0, len);  // as fresh anonymous memory is
  }
  if (!p) p = __real_mmap64(addr, len, prot, flags, fd, off);
  if (p != MAP_FAILED && nlive < kMaxLive) live[nlive++] = {p, len};
  return p;
}

extern "C" int __wrap_munmap(void* addr, size_t len) {
  for (int i = 0; i < nlive; ++i) {
    if (live[i].p != addr || live[i].len != len) continue;
    live[i] = live[--nlive];
    if (nkept == kMaxKept) break;
    kept[nkept++] = {addr, len};
    return 0;
  }
  return __real_munmap(addr, len);
}
