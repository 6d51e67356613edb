// Batched software renderer for the two 2-D environments (PushT, TwoRoom).
//
// Why native: the reference draws every frame through pymunk debug-draw callbacks into a pygame
// surface and resizes it with OpenCV, a few milliseconds of Python per frame. Data collection and
// planning-time goal rendering need thousands of frames, so here one call renders N states into
// one (N, S, S, 3) uint8 array with the GIL released and frames split across threads.
//
// Parity: PushT frames are meant to be pixel-compatible with the reference, so the 512x512 canvas
// is rasterised with the same integer rules the reference's drawing library uses (scanline polygon
// fill with truncated intersections, midpoint filled circles, Bresenham thick lines), and the
// canvas is resampled to the output size with the fixed-point bilinear arithmetic of OpenCV's
// INTER_LINEAR (11-bit coefficients, SIMD rounding). The resampling is what anti-aliases the
// frame: every output pixel blends a 2x2 neighbourhood of canvas pixels. Contact markers (the
// reference's small red anti-aliased lines where bodies touch) are drawn when the caller passes them.
// TwoRoom is drawn directly at 224x224 with its Gaussian agent dot alpha-blended in float32, as the
// reference does.
//
// Speed: walls never move, so each thread resamples an empty scene once and afterwards redraws and
// resamples only the rows/columns where the goal overlay, block, agent and markers were drawn.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "native.h"

namespace py = pybind11;

namespace lewm {
namespace {

// ---------------------------------------------------------------- label canvas + primitives
// The canvas stores a palette index per pixel; colours are looked up only when resampling. While
// `track` is on, every row remembers the column range drawn into it (lo..hi), so a frame can be
// cleared and resampled only where moving objects were drawn.
struct Canvas {
  int w = 0, h = 0;
  bool track = false;
  std::vector<uint8_t> px;
  std::vector<int> lo, hi;
  void reset(int width, int height) {
    w = width;
    h = height;
    px.assign(static_cast<size_t>(w) * h, 0);
    lo.assign(h, w);
    hi.assign(h, -1);
  }
  // Erase what tracked drawing put on the canvas since the last call (back to label 0).
  void clear_tracked() {
    for (int y = 0; y < h; ++y) {
      if (lo[y] <= hi[y]) std::memset(&px[static_cast<size_t>(y) * w + lo[y]], 0, static_cast<size_t>(hi[y] - lo[y] + 1));
      lo[y] = w;
      hi[y] = -1;
    }
  }
  void mark(int x1, int x2, int y) {
    if (!track) return;
    lo[y] = std::min(lo[y], x1);
    hi[y] = std::max(hi[y], x2);
  }
  void set(int x, int y, uint8_t c) {
    if (x >= 0 && x < w && y >= 0 && y < h) {
      px[static_cast<size_t>(y) * w + x] = c;
      mark(x, x, y);
    }
  }
  // Inclusive horizontal span, clipped.
  void span(int x1, int x2, int y, uint8_t c) {
    if (y < 0 || y >= h) return;
    if (x2 < x1) std::swap(x1, x2);
    x1 = std::max(x1, 0);
    x2 = std::min(x2, w - 1);
    if (x1 > x2) return;
    std::memset(&px[static_cast<size_t>(y) * w + x1], c, static_cast<size_t>(x2 - x1 + 1));
    mark(x1, x2, y);
  }
};

// Python's round(): half to even (nearbyint under the default rounding mode).
inline int round_half_even(double v) { return static_cast<int>(std::nearbyint(v)); }

// Scanline fill of a polygon with integer vertices. Rules (those of the reference's drawing
// library): rows miny..maxy; an edge contributes on rows y1 <= y < y2 (and on the last row when it
// ends there); intersections truncate toward zero; pairs of sorted intersections are filled
// inclusively; horizontal edges strictly inside the y range are drawn explicitly.
void fill_polygon(Canvas& cv, const int* xs, const int* ys, int n, uint8_t c) {
  int miny = ys[0], maxy = ys[0];
  for (int i = 1; i < n; ++i) {
    miny = std::min(miny, ys[i]);
    maxy = std::max(maxy, ys[i]);
  }
  if (miny == maxy) {
    int minx = xs[0], maxx = xs[0];
    for (int i = 1; i < n; ++i) {
      minx = std::min(minx, xs[i]);
      maxx = std::max(maxx, xs[i]);
    }
    cv.span(minx, maxx, miny, c);
    return;
  }
  int ylo = std::max(miny, 0), yhi = std::min(maxy, cv.h - 1);
  int hits[16];
  for (int y = ylo; y <= yhi; ++y) {
    int k = 0;
    for (int i = 0; i < n && k < 16; ++i) {
      int j = i ? i - 1 : n - 1;
      double ya = ys[j], yb = ys[i], xa = xs[j], xb = xs[i];
      if (ya == yb) continue;
      if (ya > yb) {
        std::swap(ya, yb);
        std::swap(xa, xb);
      }
      if ((y >= ya && y < yb) || (y == maxy && yb == maxy))
        hits[k++] = static_cast<int>((y - ya) * (xb - xa) / (yb - ya) + xa);
    }
    std::sort(hits, hits + k);
    for (int i = 0; i + 1 < k; i += 2) cv.span(hits[i], hits[i + 1], y, c);
  }
  for (int i = 0; i < n; ++i) {
    int j = i ? i - 1 : n - 1;
    if (miny < ys[i] && ys[j] == ys[i] && ys[i] < maxy) cv.span(xs[i], xs[j], ys[i], c);
  }
}

// Midpoint filled circle centred on integer (x0, y0); spans follow the reference library's
// convention (the disc covers x0 - r .. x0 + r - 1).
void fill_circle(Canvas& cv, int x0, int y0, int r, uint8_t c) {
  int f = 1 - r, ddx = 0, ddy = -2 * r, x = 0, y = r;
  while (x < y) {
    if (f >= 0) {
      --y;
      ddy += 2;
      f += ddy;
    }
    ++x;
    ddx += 2;
    f += ddx + 1;
    if (f >= 0) {
      cv.span(x0 - x, x0 + x - 1, y0 + y - 1, c);
      cv.span(x0 - x, x0 + x - 1, y0 - y, c);
    }
    cv.span(x0 - y, x0 + y - 1, y0 + x - 1, c);
    cv.span(x0 - y, x0 + y - 1, y0 - x, c);
  }
}

// Liang-Barsky clip of a segment to [0, w] x [0, h] with the reference library's rounding.
bool clip_segment(const Canvas& cv, int& x1, int& y1, int& x2, int& y2) {
  const int p1 = x1 - x2, p2 = -p1, p3 = y1 - y2, p4 = -p3;
  const int q1 = x1, q2 = cv.w - x1, q3 = y1, q4 = cv.h - y1;
  if ((p1 == 0 && q1 < 0) || (p2 == 0 && q2 < 0) || (p3 == 0 && q3 < 0) || (p4 == 0 && q4 < 0)) return false;
  double nmax = 0, pmin = 1;
  auto update = [&](int pa, int qa, int pb, int qb) {
    if (!pa) return;
    const double ra = static_cast<double>(qa) / pa, rb = static_cast<double>(qb) / pb;
    if (pa < 0) {
      nmax = std::max(nmax, ra);
      pmin = std::min(pmin, rb);
    } else {
      nmax = std::max(nmax, rb);
      pmin = std::min(pmin, ra);
    }
  };
  update(p1, q1, p2, q2);
  update(p3, q3, p4, q4);
  if (nmax > pmin) return false;
  auto round_away = [](double v) { return static_cast<int>(v < 0 ? v - 0.5 : v + 0.5); };
  const int ox = x1, oy = y1;
  x1 = ox + round_away(p2 * nmax);
  y1 = oy + round_away(p4 * nmax);
  x2 = ox + round_away(p2 * pmin);
  y2 = oy + round_away(p4 * pmin);
  return true;
}

inline int sign_or(int v, int fallback) { return v > 0 ? 1 : (v < 0 ? -1 : fallback); }

// Bresenham line of the given width: at each step a span of `width` pixels across the minor axis.
// As in the reference library, the step pattern comes from the unclipped endpoints, drawing starts
// at the clipped start and continues past the clipped end while still on the canvas.
void thick_line(Canvas& cv, int x1, int y1, int x2, int y2, int width, uint8_t c) {
  const bool grow_x = std::abs(x1 - x2) <= std::abs(y1 - y2);
  const int end_x = x2, end_y = y2;
  const int dx = std::abs(x2 - x1), sx = x1 < x2 ? 1 : -1;
  const int dy = std::abs(y2 - y1), sy = y1 < y2 ? 1 : -1;
  int err = (dx > dy ? dx : -dy) / 2;
  if (!clip_segment(cv, x1, y1, x2, y2)) return;
  const int lo = (width - 1) / 2, hi = width / 2;
  auto draw = [&] {
    if (grow_x)
      cv.span(x1 - lo, x1 + hi, y1, c);
    else
      for (int y = y1 - lo; y <= y1 + hi; ++y) cv.set(x1, y, c);
  };
  auto step = [&] {
    const int e2 = err;
    if (e2 > -dx) {
      err -= dy;
      x1 += sx;
    }
    if (e2 < dy) {
      err += dx;
      y1 += sy;
    }
  };
  auto inside = [&](int x, int y) { return x >= 0 && x < cv.w && y >= 0 && y < cv.h; };
  while (sign_or(x1 - x2, sx) != sx || sign_or(y1 - y2, sy) != sy) {
    draw();
    step();
  }
  if (grow_x)
    while (y1 != end_y && (inside(x1 - lo, y1) || inside(x1 + hi, y1))) {
      draw();
      step();
    }
  else
    while (x1 != end_x && (inside(x1, y1 - lo) || inside(x1, y1 + hi))) {
      draw();
      step();
    }
  draw();
}

// Outline segment as the reference's debug-draw does it: a 2*radius wide line, a quad offset by a
// rounded |normal| (absolute values: the reference's quirk, kept for parity) and round end caps.
void fat_segment(Canvas& cv, double ax, double ay, double bx, double by, double radius, uint8_t c) {
  const int x1 = round_half_even(ax), y1 = round_half_even(ay);
  const int x2 = round_half_even(bx), y2 = round_half_even(by);
  const int width = round_half_even(std::max(1.0, radius * 2));
  thick_line(cv, x1, y1, x2, y2, width, c);
  if (width <= 2) return;
  double ox = std::abs(y2 - y1), oy = std::abs(x2 - x1);
  if (ox == 0 && oy == 0) return;
  const double scale = radius / std::sqrt(ox * ox + oy * oy);
  const int oxi = round_half_even(ox * scale), oyi = round_half_even(oy * scale);
  const int qx[4] = {x1 - oxi, x1 + oxi, x2 + oxi, x2 - oxi};
  const int qy[4] = {y1 - oyi, y1 + oyi, y2 + oyi, y2 - oyi};
  fill_polygon(cv, qx, qy, 4, c);
  const int rr = round_half_even(radius);
  fill_circle(cv, x1, y1, rr, c);
  fill_circle(cv, x2, y2, rr, c);
}

// ---------------------------------------------------------------- OpenCV-compatible resampling
// Bilinear taps of cv::resize(INTER_LINEAR) for 8-bit images: half-pixel centres, float
// coordinates, 11-bit fixed-point weights.
struct Taps {
  std::vector<int> idx;
  std::vector<int16_t> w0, w1;
};

Taps bilinear_taps(int n_in, int n_out) {
  Taps t;
  t.idx.resize(n_out);
  t.w0.resize(n_out);
  t.w1.resize(n_out);
  const double scale = static_cast<double>(n_in) / n_out;
  for (int d = 0; d < n_out; ++d) {
    float f = static_cast<float>((d + 0.5) * scale - 0.5);
    int s = static_cast<int>(std::floor(f));
    f -= static_cast<float>(s);
    if (s < 0) {
      s = 0;
      f = 0.f;
    }
    if (s >= n_in - 1) {  // last source pixel: weight entirely on it
      s = n_in - 2;
      f = 1.f;
    }
    t.idx[d] = s;
    t.w0[d] = static_cast<int16_t>(std::nearbyint((1.f - f) * 2048.f));
    t.w1[d] = static_cast<int16_t>(std::nearbyint(f * 2048.f));
  }
  return t;
}

using Palette = std::vector<std::array<int, 3>>;

// Resample a label canvas through its palette into an (n_out, n_out, 3) frame, with OpenCV's
// arithmetic: horizontal pass in 11-bit fixed point, vertical pass with its vectorised rounding
// ((a >> 4) * b >> 16, then + 2 >> 2). Most of a frame is flat colour: when the 2x2 source labels
// agree that arithmetic returns the colour itself (taps sum to 2048, see `flat_ok`), so it is copied.
void resample_pixel(const uint8_t* r0, const uint8_t* r1, int sx, int a0, int a1, int b0, int b1, const Palette& pal,
                    bool flat_ok, uint8_t* o) {
  const uint8_t l00 = r0[sx], l01 = r0[sx + 1], l10 = r1[sx], l11 = r1[sx + 1];
  if (flat_ok && l00 == l01 && l00 == l10 && l00 == l11) {
    const auto& c = pal[l00];
    o[0] = static_cast<uint8_t>(c[0]);
    o[1] = static_cast<uint8_t>(c[1]);
    o[2] = static_cast<uint8_t>(c[2]);
    return;
  }
  for (int ch = 0; ch < 3; ++ch) {
    const int d0 = pal[l00][ch] * a0 + pal[l01][ch] * a1;
    const int d1 = pal[l10][ch] * a0 + pal[l11][ch] * a1;
    const int v = ((((d0 >> 4) * b0) >> 16) + (((d1 >> 4) * b1) >> 16) + 2) >> 2;
    o[ch] = static_cast<uint8_t>(std::clamp(v, 0, 255));
  }
}

// Output row y, columns [x0, x1).
void resample_row(const Canvas& cv, const Palette& pal, const Taps& tx, const Taps& ty, int y, int x0, int x1,
                  bool flat_ok, uint8_t* row_out) {
  const uint8_t* r0 = &cv.px[static_cast<size_t>(ty.idx[y]) * cv.w];
  const uint8_t* r1 = r0 + cv.w;
  for (int x = x0; x < x1; ++x)
    resample_pixel(r0, r1, tx.idx[x], tx.w0[x], tx.w1[x], ty.w0[y], ty.w1[y], pal, flat_ok, row_out + x * 3);
}

void resample(const Canvas& cv, const Palette& pal, const Taps& tx, const Taps& ty, int n_out, bool flat_ok,
              uint8_t* out) {
  for (int y = 0; y < n_out; ++y) resample_row(cv, pal, tx, ty, y, 0, n_out, flat_ok, out + static_cast<size_t>(y) * n_out * 3);
}

// With taps summing to 2048 the fixed-point result of a flat 2x2 patch is exactly its colour.
bool taps_sum_to_one(const Taps& t) {
  for (size_t i = 0; i < t.idx.size(); ++i)
    if (t.w0[i] + t.w1[i] != 2048) return false;
  return true;
}

void copy_canvas(const Canvas& cv, const Palette& pal, uint8_t* out) {
  for (size_t i = 0; i < cv.px.size(); ++i)
    for (int ch = 0; ch < 3; ++ch) out[i * 3 + ch] = static_cast<uint8_t>(pal[cv.px[i]][ch]);
}

// ---------------------------------------------------------------- PushT scene
constexpr int kPushTCanvas = 512;
enum PushTLabel : uint8_t { kBg, kGoal, kAgentRim, kAgentFill, kBlockFill, kBlockRim, kWall, kNumPushT };

// Colours: named colours of the reference (white, LightGreen, RoyalBlue, LightSlateGray,
// LightGray); fills are the outline colour * 1.2, rounded, capped at 255.
const Palette& pusht_palette() {
  static const Palette p = {{255, 255, 255}, {144, 238, 144}, {65, 105, 225}, {78, 126, 255},
                            {143, 163, 184}, {119, 136, 153}, {211, 211, 211}};
  return p;
}

// The T block in body coordinates, vertex order as the physics engine stores it (the outline is
// traced edge by edge in this order, which decides Bresenham rounding).
const double kBar[4][2] = {{-60, 0}, {60, 0}, {60, 30}, {-60, 30}};
const double kStem[4][2] = {{-15, 30}, {15, 30}, {15, 120}, {-15, 120}};

void world_quad(const double v[4][2], double px, double py, double angle, double wx[4], double wy[4]) {
  const double c = std::cos(angle), s = std::sin(angle);
  for (int i = 0; i < 4; ++i) {
    wx[i] = c * v[i][0] - s * v[i][1] + px;
    wy[i] = s * v[i][0] + c * v[i][1] + py;
  }
}

void fill_quad(Canvas& cv, const double wx[4], const double wy[4], uint8_t c) {
  int xs[4], ys[4];
  for (int i = 0; i < 4; ++i) {
    xs[i] = round_half_even(wx[i]);
    ys[i] = round_half_even(wy[i]);
  }
  fill_polygon(cv, xs, ys, 4, c);
}

struct PushTParams {
  double goal_x, goal_y, goal_angle;
  bool draw_goal;
};

void draw_walls(Canvas& cv) {
  const double walls[4][4] = {{5, 506, 5, 5}, {5, 5, 506, 5}, {506, 5, 506, 506}, {5, 506, 506, 506}};
  for (const auto& w : walls) fat_segment(cv, w[0], w[1], w[2], w[3], 2.0, kWall);
}

// Moving content of a frame (goal overlay, block, agent), drawn with row tracking on.
void draw_pusht_objects(Canvas& cv, const double* st, const PushTParams& p) {
  double wx[4], wy[4];
  if (p.draw_goal) {
    for (const auto* quad : {kBar, kStem}) {
      world_quad(quad, p.goal_x, p.goal_y, p.goal_angle, wx, wy);
      fill_quad(cv, wx, wy, kGoal);
    }
  }
  // Block before agent, as the reference's debug draw orders them: each convex part filled light,
  // then outlined with radius-2 fat segments.
  for (const auto* quad : {kBar, kStem}) {
    world_quad(quad, st[2], st[3], st[4], wx, wy);
    fill_quad(cv, wx, wy, kBlockFill);
    for (int i = 0; i < 4; ++i) {
      const int j = (i + 1) % 4;
      fat_segment(cv, wx[i], wy[i], wx[j], wy[j], 2.0, kBlockRim);
    }
  }
  // Agent: outline-coloured disc of radius 15 with a lighter disc of radius 11 on top.
  const int ax = round_half_even(st[0]), ay = round_half_even(st[1]);
  fill_circle(cv, ax, ay, 15, kAgentRim);
  fill_circle(cv, ax, ay, 11, kAgentFill);
}

// Contact markers. While bodies touch, the reference's debug draw adds, per contact point, a short
// anti-aliased red line (contact point on body A - 2 n to contact point on body B + 2 n), blended
// over what is already drawn. Blended pixels get fresh palette entries (labels past the fixed colours).
struct BlendedCanvas {
  Canvas& cv;
  Palette& pal;
  static constexpr size_t kMaxLabels = 256;
  // Blend `color` over pixel (x, y) with weight `brightness`, float32 and truncation as the reference.
  void blend(int x, int y, const std::array<int, 3>& color, float brightness) {
    if (x < 0 || x >= cv.w || y < 0 || y >= cv.h || pal.size() >= kMaxLabels) return;
    const auto bg = pal[cv.px[static_cast<size_t>(y) * cv.w + x]];
    std::array<int, 3> mixed;
    auto f32 = [](double v) { return static_cast<float>(v); };
    const float inv = f32(1.0 - brightness);
    for (int ch = 0; ch < 3; ++ch)
      mixed[ch] = static_cast<uint8_t>(f32(double(f32(double(brightness) * color[ch])) + f32(double(inv) * bg[ch])));
    pal.push_back(mixed);
    cv.set(x, y, static_cast<uint8_t>(pal.size() - 1));
  }
};

// Xiaolin-Wu style anti-aliased line with the reference drawing library's conventions (float
// arithmetic, one-pixel-wider clipping, endpoint gaps, rows shifted by one to truncate safely).
void aa_line(BlendedCanvas& bc, const std::array<int, 3>& color, float fx, float fy, float tx, float ty) {
  float dx = tx - fx, dy = ty - fy;
  if (std::fabs(dx) < 0.0001f && std::fabs(dy) < 0.0001f) {
    bc.blend(static_cast<int>(std::floor(fx + 0.5f)), static_cast<int>(std::floor(fy + 0.5f)), color, 1.f);
    return;
  }
  float clip_left = -1.f, clip_right = clip_left + bc.cv.w + 1.f;
  float clip_top = -1.f, clip_bottom = clip_top + bc.cv.h + 1.f;
  const bool steep = std::fabs(dx) < std::fabs(dy);
  if (steep) {
    std::swap(fx, fy);
    std::swap(tx, ty);
    std::swap(dx, dy);
    std::swap(clip_left, clip_top);
    std::swap(clip_right, clip_bottom);
  }
  if (dx < 0) {
    std::swap(fx, tx);
    std::swap(fy, ty);
    dx = -dx;
    dy = -dy;
  }
  if (tx <= clip_left || fx >= clip_right) return;
  const float gradient = dy / dx;
  if (fx < clip_left) {
    fy += gradient * (clip_left - fx);
    fx = clip_left;
  }
  if (tx > clip_right) {
    ty += gradient * (clip_right - tx);
    tx = clip_right;
  }
  if (gradient > 0.0f) {
    if (ty <= clip_top || fy >= clip_bottom) return;
    if (fy < clip_top) {
      fx += (clip_top - fy) / gradient;
      fy = clip_top;
    }
    if (ty > clip_bottom) {
      tx += (clip_bottom - ty) / gradient;
      ty = clip_bottom;
    }
  } else {
    if (fy <= clip_top || ty >= clip_bottom) return;
    if (ty < clip_top) {
      tx += (clip_top - ty) / gradient;
      ty = clip_top;
    }
    if (fy > clip_bottom) {
      fx += (clip_bottom - fy) / gradient;
      fy = clip_bottom;
    }
  }
  fy += 1.0f;
  ty += 1.0f;
  auto plot = [&](int major, int minor, float b) {
    if (steep)
      bc.blend(minor, major, color, b);
    else
      bc.blend(major, minor, color, b);
  };
  int x_start = static_cast<int>(fx);
  float intersect_y = fy + gradient * (x_start - fx);
  if (tx > clip_left + 1.0f) {
    const float y_end = intersect_y, gap = 1 + x_start - fx;
    float b = y_end - static_cast<int>(y_end);
    if (static_cast<int>(y_end) < y_end) plot(x_start, static_cast<int>(y_end), b * gap);
    plot(x_start, static_cast<int>(y_end) - 1, (1 - b) * gap);
    intersect_y += gradient;
    ++x_start;
  }
  const int x_end = static_cast<int>(std::ceil(tx));
  if (fx < clip_right - 1.0f) {
    const float y_end = ty + gradient * (x_end - tx), gap = 1 - x_end + tx;
    float b = y_end - static_cast<int>(y_end);
    if (static_cast<int>(y_end) < y_end) plot(x_end, static_cast<int>(y_end), b * gap);
    plot(x_end, static_cast<int>(y_end) - 1, (1 - b) * gap);
  }
  for (int x = x_start; x < x_end; ++x) {
    const int y = static_cast<int>(intersect_y);
    const float b = 1 - intersect_y + y;
    plot(x, y - 1, b);
    if (y < intersect_y) plot(x, y, 1 - b);
    intersect_y += gradient;
  }
}

// Per-thread PushT renderer. The walls never move, so the frame of an empty scene is resampled once;
// each frame then redraws only the moving objects (walls on top, as the reference's debug draw puts
// them last) and resamples only output pixels whose source pixels lie in rows' drawn ranges.
struct PushTRenderer {
  int size;
  bool flat_ok;
  Taps taps;
  Canvas cv;
  Palette pal;  // fixed colours, then this frame's blended contact-marker pixels
  std::vector<uint8_t> empty_frame;

  explicit PushTRenderer(int out_size) : size(out_size), taps(bilinear_taps(kPushTCanvas, out_size)) {
    flat_ok = taps_sum_to_one(taps);
    cv.reset(kPushTCanvas, kPushTCanvas);
    draw_walls(cv);
    empty_frame.resize(static_cast<size_t>(size) * size * 3);
    if (size == kPushTCanvas)
      copy_canvas(cv, pusht_palette(), empty_frame.data());
    else
      resample(cv, pusht_palette(), taps, taps, size, flat_ok, empty_frame.data());
  }

  // contacts: n_contacts rows of (ax, ay, bx, by) marker endpoints; rows with NaN are skipped.
  // colours: nullptr, or a whole kNumPushT palette whose background and wall entries equal the defaults
  // (the empty frame is resampled once with those); only the moving objects change colour.
  void render(const double* st, const PushTParams& p, const double* contacts, int64_t n_contacts, uint8_t* out,
              const Palette* colours = nullptr) {
    cv.clear_tracked();
    cv.track = true;
    draw_pusht_objects(cv, st, p);
    cv.track = false;
    draw_walls(cv);  // restores wall pixels the clear or the objects touched
    pal = colours ? *colours : pusht_palette();
    if (n_contacts > 0) {
      cv.track = true;
      BlendedCanvas bc{cv, pal};
      static const std::array<int, 3> kMarker = {231, 76, 60};
      for (int64_t k = 0; k < n_contacts; ++k) {
        const double* c = contacts + 4 * k;
        if (!(std::isfinite(c[0]) && std::isfinite(c[1]) && std::isfinite(c[2]) && std::isfinite(c[3]))) continue;
        aa_line(bc, kMarker, static_cast<float>(round_half_even(c[0])), static_cast<float>(round_half_even(c[1])),
                static_cast<float>(round_half_even(c[2])), static_cast<float>(round_half_even(c[3])));
      }
      cv.track = false;
    }
    std::memcpy(out, empty_frame.data(), empty_frame.size());
    const size_t row_bytes = static_cast<size_t>(size) * 3;
    for (int y = 0; y < size; ++y) {
      int s0 = y, s1 = y;  // source rows feeding output row y
      if (size != kPushTCanvas) {
        s0 = taps.idx[y];
        s1 = s0 + 1;
      }
      const int lo = std::min(cv.lo[s0], cv.lo[s1]), hi = std::max(cv.hi[s0], cv.hi[s1]);
      if (lo > hi) continue;
      uint8_t* row = out + y * row_bytes;
      if (size == kPushTCanvas) {
        for (int x = lo; x <= hi; ++x)
          for (int ch = 0; ch < 3; ++ch) row[x * 3 + ch] = static_cast<uint8_t>(pal[cv.px[static_cast<size_t>(y) * cv.w + x]][ch]);
        continue;
      }
      // Output columns whose taps (idx, idx + 1) touch [lo, hi]; idx is non-decreasing.
      const int x0 = static_cast<int>(std::lower_bound(taps.idx.begin(), taps.idx.end(), lo - 1) - taps.idx.begin());
      const int x1 = static_cast<int>(std::upper_bound(taps.idx.begin(), taps.idx.end(), hi) - taps.idx.begin());
      resample_row(cv, pal, taps, taps, y, x0, x1, flat_ok, row);
    }
  }
};

// ---------------------------------------------------------------- TwoRoom scene
constexpr int kTwoRoomSize = 224;

// The fixed layout as an RGB image: 4-px border lines just inside a 14-px margin (spanning the whole
// image), a vertical wall x in [107, 117] with one door y in [35, 63]; walls black, the rest white.
std::vector<uint8_t> tworoom_background() {
  const int n = kTwoRoomSize;
  std::vector<uint8_t> img(static_cast<size_t>(n) * n * 3);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      const bool stripe = x >= 107 && x <= 117 && !(y >= 35 && y <= 63);
      const bool border = (x >= 10 && x < 14) || (x >= 210 && x < 214) || (y >= 10 && y < 14) ||
                          (y >= 210 && y < 214);
      std::memset(&img[(static_cast<size_t>(y) * n + x) * 3], stripe || border ? 0 : 255, 3);
    }
  return img;
}

// Red Gaussian dot (sigma = radius) normalised to peak 1 over the pixel grid, blended over the
// white/black scene in float32 with truncation to uint8, as the reference does. Each float32 operation
// is rounded explicitly (exact double product/sum, then a cast) so no compiler contraction into fused
// multiply-adds can change which pixels truncate to 254. Beyond 2*sigma^2*20 in squared distance
// alpha < 3e-9 leaves every channel at its background value, so only a box around the dot is blended.
void draw_tworoom(const std::vector<uint8_t>& background, double px, double py, float radius,
                  const std::array<int, 3>& colour, uint8_t* out) {
  const int n = kTwoRoomSize;
  std::memcpy(out, background.data(), background.size());
  const float fx = static_cast<float>(px), fy = static_cast<float>(py);
  const float denom = static_cast<float>(2.0 * radius * radius);
  auto f32 = [](double v) { return static_cast<float>(v); };
  // exp is monotonic, so the peak over the grid is exp at the grid's smallest squared distance.
  auto nearest_sq = [&](float c) {
    float best = INFINITY;
    for (int i = 0; i < n; ++i) best = std::min(best, f32(double(f32(double(i) - c)) * f32(double(i) - c)));
    return best;
  };
  const float peak = std::exp(-f32(double(nearest_sq(fx)) + nearest_sq(fy)) / denom);
  const double reach = std::sqrt(20.0 * denom) + 2.0;
  const int x0 = std::max(0, static_cast<int>(std::floor(fx - reach))), x1 = std::min(n - 1, static_cast<int>(std::ceil(fx + reach)));
  const int y0 = std::max(0, static_cast<int>(std::floor(fy - reach))), y1 = std::min(n - 1, static_cast<int>(std::ceil(fy + reach)));
  for (int y = y0; y <= y1; ++y) {
    const float dy = f32(double(y) - fy), dy2 = f32(double(dy) * dy);
    for (int x = x0; x <= x1; ++x) {
      const float dx = f32(double(x) - fx), dx2 = f32(double(dx) * dx);
      float a = std::exp(-f32(double(dx2) + dy2) / denom);
      if (peak > 0.f) a = a / peak;
      a = std::min(std::max(a, 0.f), 1.f);
      uint8_t* o = out + (static_cast<size_t>(y) * n + x) * 3;
      const float bg = o[1];  // background is grey-level: white floor/door or black wall
      const float base = f32(double(bg) * f32(1.0 - a));
      // the reference's red (255, 0, 0) gives base + 255 a, base, base; other colours blend the same way
      for (int ch = 0; ch < 3; ++ch) o[ch] = static_cast<uint8_t>(f32(double(base) + f32(double(colour[ch]) * a)));
    }
  }
}

// ---------------------------------------------------------------- batching
// Runs fn(lo, hi) over [0, n) on up to `threads` threads (0: all cores). Work is handed out in small
// blocks from a shared counter, so a thread the OS preempts does not hold up the others.
template <typename Fn>
void parallel_frames(int64_t n, int threads, Fn&& fn) {
  int t = threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  t = static_cast<int>(std::min<int64_t>(t, n));
  if (t <= 1) {
    fn(0, n);
    return;
  }
  constexpr int64_t kBlock = 8;
  std::atomic<int64_t> next{0};
  auto worker = [&] {
    for (int64_t lo; (lo = next.fetch_add(kBlock)) < n;) fn(lo, std::min(n, lo + kBlock));
  };
  std::vector<std::thread> pool;
  for (int i = 1; i < t; ++i) pool.emplace_back(worker);
  worker();  // the calling thread works too
  for (auto& th : pool) th.join();
}

using StateArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

py::array_t<uint8_t> render_pusht(StateArray states, int size, py::array_t<double, py::array::forcecast> goal_pose,
                                  bool draw_goal, std::optional<StateArray> contacts, int threads,
                                  std::optional<py::array_t<int, py::array::c_style | py::array::forcecast>> palette) {
  if (states.ndim() != 2 || states.shape(1) < 5)
    throw std::invalid_argument("states must have shape (N, >=5): agent xy, block xy, block angle");
  if (size < 2 || size > 4096) throw std::invalid_argument("size must be in [2, 4096], got " + std::to_string(size));
  if (goal_pose.size() != 3) throw std::invalid_argument("goal_pose must hold 3 numbers (x, y, angle)");
  const int64_t n = states.shape(0), stride = states.shape(1);
  const double* contact_data = nullptr;
  int64_t per_frame = 0;
  if (contacts) {
    if (contacts->ndim() != 3 || contacts->shape(0) != n || contacts->shape(2) != 4)
      throw std::invalid_argument("contacts must have shape (N, K, 4): per frame K marker segments ax, ay, bx, by");
    contact_data = contacts->data();
    per_frame = contacts->shape(1);
  }
  std::optional<Palette> colours;
  if (palette) {
    if (palette->ndim() != 2 || palette->shape(0) != kNumPushT || palette->shape(1) != 3)
      throw std::invalid_argument("palette must have shape (" + std::to_string(kNumPushT) + ", 3)");
    colours = Palette(kNumPushT);
    for (int i = 0; i < kNumPushT; ++i)
      for (int ch = 0; ch < 3; ++ch) {
        const int v = palette->at(i, ch);
        if (v < 0 || v > 255) throw std::invalid_argument("palette entries must be in [0, 255]");
        (*colours)[i][ch] = v;
      }
    if ((*colours)[kBg] != pusht_palette()[kBg] || (*colours)[kWall] != pusht_palette()[kWall])
      throw std::invalid_argument("palette: background and wall colours cannot change (objects only)");
  }
  const Palette* colours_ptr = colours ? &*colours : nullptr;
  const double* g = goal_pose.data();
  const PushTParams params{g[0], g[1], g[2], draw_goal};
  py::array_t<uint8_t> out({n, static_cast<int64_t>(size), static_cast<int64_t>(size), static_cast<int64_t>(3)});
  const double* src = states.data();
  uint8_t* dst = out.mutable_data();
  const size_t frame_bytes = static_cast<size_t>(size) * size * 3;
  {
    py::gil_scoped_release release;
    parallel_frames(n, threads, [&](int64_t lo, int64_t hi) {
      // Kept per thread: single-frame calls (which run on the caller's thread) skip the set-up.
      thread_local std::unique_ptr<PushTRenderer> renderer;
      if (!renderer || renderer->size != size) renderer = std::make_unique<PushTRenderer>(size);
      for (int64_t i = lo; i < hi; ++i)
        renderer->render(src + i * stride, params, contact_data ? contact_data + i * per_frame * 4 : nullptr, per_frame,
                         dst + i * frame_bytes, colours_ptr);
    });
  }
  return out;
}

py::array_t<uint8_t> render_tworoom(StateArray states, double radius, int threads, std::array<int, 3> colour) {
  for (int v : colour)
    if (v < 0 || v > 255) throw std::invalid_argument("colour entries must be in [0, 255]");
  if (states.ndim() != 2 || states.shape(1) < 2)
    throw std::invalid_argument("states must have shape (N, >=2): agent x, y");
  if (!(radius > 0)) throw std::invalid_argument("radius must be positive");
  const int64_t n = states.shape(0), stride = states.shape(1);
  const int64_t s = kTwoRoomSize;
  py::array_t<uint8_t> out({n, s, s, static_cast<int64_t>(3)});
  const double* src = states.data();
  uint8_t* dst = out.mutable_data();
  {
    py::gil_scoped_release release;
    static const std::vector<uint8_t> background = tworoom_background();
    parallel_frames(n, threads, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i)
        draw_tworoom(background, src[i * stride], src[i * stride + 1], static_cast<float>(radius), colour, dst + i * s * s * 3);
    });
  }
  return out;
}

}  // namespace

void register_render(py::module_& m) {
  m.def("render_pusht", &render_pusht, py::arg("states"), py::arg("size"),
        py::arg("goal_pose"), py::arg("draw_goal") = true,
        py::arg("contacts") = py::none(), py::arg("threads") = 0, py::arg("palette") = py::none(),
        "Render PushT states (N, >=5) to (N, size, size, 3) uint8; contacts (N, K, 4) marker segments or None; "
        "palette: None or (7, 3) colours (bg, goal, agent rim, agent fill, block fill, block rim, wall; bg and "
        "wall fixed); size 512 returns the raw canvas.");
  m.def("render_tworoom", &render_tworoom, py::arg("states"), py::arg("radius") = 7.0, py::arg("threads") = 0,
        py::arg("colour") = std::array<int, 3>{255, 0, 0},
        "Render TwoRoom agent positions (N, >=2) to (N, 224, 224, 3) uint8; colour: the agent's RGB.");
}

}  // namespace lewm
