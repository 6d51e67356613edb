#include "native.h"

PYBIND11_MODULE(_native, m) {
  m.doc() = "lewm_fast native helpers (C++ via pybind11)";
  lewm::register_clips(m);
  lewm::register_render(m);
}
