// Shared declarations for the lewm_fast._native extension.
// Each .cpp file in csrc/ defines one register_* function that adds its bindings;
// module.cpp calls them all. Add a new file + its register_* line here to extend.
#pragma once
#include <pybind11/pybind11.h>

namespace lewm {
void register_clips(pybind11::module_& m);
void register_render(pybind11::module_& m);
}  // namespace lewm
