"""What a conv kernel variant is computed on: the layer's fixed geometry, the tunable parameters, and the
activation layout they imply (padded, phase-split or row-aligned planes; tap offsets as 1-D constants).

Kept apart from the C emitters (``codegen``) because the packers, the tuner and the runtime need these facts
without rendering any code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class ConvGeometry:
    """Everything about a conv call that is fixed at compile time except the batch size."""

    cin: int
    cout: int
    h: int
    w: int
    kh: int
    kw: int
    stride: int
    pad_h: int
    pad_w: int
    pitch: int = 0  # floats per padded row when rounded up (aligned rows); 0: the natural width
    plane_multiple: int = 1  # channel planes rounded up to this many floats (aligned planes)
    tight: bool = False  # rows hold only the image's columns; the kernel masks the left/right zero borders

    @property
    def col0(self) -> int:
        """Column of a (phase) row where the image's column 0 sits: after the left zero columns, or at 0."""
        return 0 if self.tight else self.pad_w

    @property
    def ho(self) -> int:
        return (self.h + 2 * self.pad_h - self.kh) // self.stride + 1

    @property
    def wo(self) -> int:
        return (self.w + 2 * self.pad_w - self.kw) // self.stride + 1

    @property
    def hph(self) -> int:
        # rows each phase plane needs: output rows plus the kernel's reach, never fewer than the padded input
        s = self.stride
        return max(-(-(self.h + 2 * self.pad_h) // s), self.ho + (self.kh - 1) // s)

    @property
    def wph(self) -> int:
        """Floats per row of a (phase) plane. At stride 1 a row needs only ``pad_w`` zero columns, not two sets:
        a tap that reaches past a row's end wraps into the next row's left zero columns (or the next plane's, or
        the slack), so the right padding of one row is the left padding of the next. 7 columns padded 1 take rows
        of 8, not 9 — 11% less work on that layer's wide rows (56 columns: 2%)."""
        s = self.stride
        if self.tight:
            return self.wo
        if s == 1:
            return max(self.w + self.pad_w, self.wo, self.pitch)
        return max(-(-(self.w + 2 * self.pad_w) // s), self.wo + (self.kw - 1) // s, self.pitch)

    @property
    def phase_stride(self) -> int:
        """Floats from one phase plane to the next: rounded to the plane multiple on tight rows, so that every
        phase of a stride-2 tight layer starts on a vector boundary."""
        n = self.hph * self.wph
        return -(-n // self.plane_multiple) * self.plane_multiple if self.tight else n

    @property
    def plane(self) -> int:
        m = self.plane_multiple
        return -(-self.stride * self.stride * self.phase_stride // m) * m

    @property
    def wide(self) -> int:
        return self.ho * self.wph

    def vectors(self, vw: int) -> int:
        """Vectors of ``vw`` floats that cover the wide output rows (the most a tile needs)."""
        return -(-self.wide // vw)

    def tap_offset(self, tap: int) -> int:
        dy, dx = divmod(tap, self.kw)
        s = self.stride
        phase = (dy % s) * s + dx % s
        return phase * self.phase_stride + (dy // s) * self.wph + dx // s


@dataclass(frozen=True)
class KernelParams:
    """What every kernel family's parameters have: accumulator vectors per tile (R) and the vector width in floats
    (VW). Each family (:mod:`tessera.compiler.kernels`) subclasses it with a frozen dataclass of its own whose
    ``family`` names it; ``cblock`` (input channels per block, 0: none) and ``shift`` (dx-shifted accumulators on
    aligned rows) are the facts the shared conv renderer asks of any of them, fields only where a family has them."""

    r: int = 6
    vw: int = 8
    family: ClassVar[str] = ""
    cblock: ClassVar[int] = 0
    shift: ClassVar[bool] = False


def layer_geometry(geom: ConvGeometry, params: KernelParams) -> ConvGeometry:
    """The geometry a kernel variant runs on: the shifted variant pads rows to a multiple of the vector width,
    or keeps rows of exactly half a vector (7 columns and the shared zero column with AVX-512: two rows a
    vector, see :func:`shift_copies`)."""
    if not params.shift:
        return geom
    if tight_rows(geom, params.vw, params.r):
        return dataclasses.replace(geom, tight=True, plane_multiple=params.vw)
    if _half_vector_rows(geom, params.vw):
        return dataclasses.replace(geom, plane_multiple=params.vw)  # every channel's plane starts aligned
    return dataclasses.replace(geom, pitch=-(-_shift_row(geom) // params.vw) * params.vw)


def _shift_row(geom: ConvGeometry) -> int:
    """Floats of a row before the shifted variant rounds it up to whole vectors: the padded image row at stride
    1, a phase row at stride 2."""
    return geom.w + 2 * geom.pad_w if geom.stride == 1 else geom.wph


def tight_rows(geom: ConvGeometry, vw: int, r: int | None = None) -> bool:
    """Rows the shifted variant keeps at the image's own width, with no zero column: a "same" stride-1 conv 3
    wide whose rows are whole vectors (16, 32 columns with AVX-512) or half of one (8: two rows a vector, two
    input copies). Every vector then starts a row, so the columns a tap reads past the left or right edge are
    masked where the three sets combine; nothing is computed on padding. CIFAR-size models run on these widths:
    rows of 8 cost 8 lanes, not 16, and 16-wide rows load aligned instead of at a 17-float pitch. With ``r``:
    also that a tile of r vectors holds whole rows (else the variant runs on rows rounded up to vectors)."""
    same = geom.stride == 1 and geom.kw == 3 and geom.pad_w == 1
    # stride 2, 3x3, padding 1 on an even image: the phase planes of even and odd columns are ``wo`` wide each, and
    # every tap reads output column j or j-1 of one of them (two accumulator sets, see ConvRenderer.tap_place)
    halved = geom.stride == 2 and (geom.kh, geom.kw, geom.pad_h, geom.pad_w) == (3, 3, 1, 1) and \
        geom.h % 2 == 0 and geom.w % 2 == 0
    w = geom.wo
    return (same or halved) and (w % vw == 0 or 2 * w == vw) and (r is None or w <= vw or r * vw % w == 0)


def tight_tile(geom: ConvGeometry, vw: int, r: int) -> int:
    """The largest accumulator count <= r whose tile holds whole rows (tight rows wider than a vector)."""
    per_row = geom.wo // vw if geom.wo % vw == 0 else 1
    return max(per_row, r // per_row * per_row)


def _half_vector_rows(geom: ConvGeometry, vw: int) -> bool:
    """Natural stride-1 rows of exactly half a vector: the shifted variant keeps them, two a vector."""
    return geom.stride == 1 and 2 * geom.wph == vw


def shift_copies(geom: ConvGeometry, params: KernelParams) -> int:
    """Copies of the input the shifted variant reads: 1 on rows of whole vectors; 2 on half-vector rows, the
    second shifted by one row, so that every row's load is aligned in one of them (a 7x7 image then costs 4
    vectors a tile instead of 7 on rows padded to 16)."""
    if not params.shift:
        return 1
    g = layer_geometry(geom, params)
    return params.vw // g.wph if g.wph < params.vw else 1


def shift_applies(geom: ConvGeometry, group: int, vw: int) -> bool:
    """The shifted variant handles stride-1 convs up to 3 wide (a set of accumulators per kernel column) and
    stride-2 3x3 pad-1 convs on tight phase planes (two sets; resnet20's downsampling convs on Zen 5: 6.2 -> 3.6 us
    and 5.8 -> 3.6 us at 1 thread, where the channel-blocked kernel read unaligned 17- and 9-float rows), with a
    single filter per unit; taps may be any subset of the kernel. Its rows are rounded up to whole vectors, so
    narrow images pay padding: with AVX2 not where that wastes more than a fifth of the work (measured on Zen 3,
    where unaligned loads cost little); with AVX-512 every unaligned 64-byte load splits a cache line, and
    aligned rows won even at 7 columns padded to 16 (Xeon, 512x7² at 12%: 0.63 ms vs 0.69 ms unaligned)."""
    row = _shift_row(geom)
    rounded = -(-row // vw) * vw <= (1.2 if vw <= 8 else 2.0) * row
    if geom.stride == 2:
        return group == 1 and geom.kw == 3 and (tight_rows(geom, vw) or rounded)
    return geom.stride == 1 and group == 1 and 1 < geom.kw <= 3 and \
        (tight_rows(geom, vw) or _half_vector_rows(geom, vw) or rounded)


FILTER_CHUNK = 32  # filter positions per work item of the channel-blocked kernel (partial sums on the stack)
L1_BUDGET = 16 * 1024  # bytes of input slice per channel block


def channel_block(geom: ConvGeometry, taps: list[list[int]], tile: int) -> int:
    """Input channels per block so that one block's slice of a tile (the union of every tap's reach) fits
    L1_BUDGET."""
    spans = sorted({(geom.tap_offset(t), geom.tap_offset(t) + tile) for pat in taps for t in pat})
    covered, end = 0, -1
    for lo, hi in spans:
        covered += max(0, hi - max(lo, end))
        end = max(end, hi)
    return max(1, min(geom.cin, L1_BUDGET // (4 * covered)))


def padded_pitch(w: int) -> int:
    """Floats per row of the padded activation layout: the image row and one zero column, which is the right
    border of this row and the left border of the next (see :attr:`ConvGeometry.wph`)."""
    return w + 1


def padded_plane(h: int, w: int) -> int:
    """Floats per channel of the padded activation layout: H+2 rows (a zero row above and below the image) of
    :func:`padded_pitch` floats; pixel (y, x) sits at ``padded_origin(w) + y * padded_pitch(w) + x``.

    The whole-network function keeps every 4-D activation in this layout, so a stride-1 3x3 conv reads its input
    in place (its planes are exactly these) and writes its output as whole vectors into the next layer's input.
    """
    return (h + 2) * padded_pitch(w)


def padded_origin(w: int) -> int:
    """Offset of pixel (0, 0) in a padded plane: past the top zero row and the first row's zero column."""
    return padded_pitch(w) + 1


SLACK = 1024  # floats after a network buffer's planes: the largest tile overhang an in-place conv reads past them


@dataclass(frozen=True)
class Layout:
    """Where an activation's pixel (c, y, x) sits in a whole-network buffer: ``c * plane + origin + y * pitch + x``;
    every float that is not a pixel stays zero. ``copy``: when not 0, the buffer also holds the planes again from
    that offset, shifted up by one row (pixel p at ``p + copy - pitch`` too), which the shifted kernel on rows of
    half a vector reads aligned (:func:`shift_copies`); whoever writes the buffer writes both."""

    plane: int
    origin: int
    pitch: int
    copy: int = 0

    @property
    def tight(self) -> bool:
        return self.origin == self.pitch  # no zero column: row 0 starts right after the top zero row

    @property
    def copy_shift(self) -> int:
        """Offset from a pixel to its second copy (0: no copy)."""
        return self.copy - self.pitch if self.copy else 0

    def floats(self, channels: int) -> int:
        """Floats of a buffer in this layout: the planes (twice with a copy) and the slack after them."""
        return self.copy + channels * self.plane + SLACK


def padded_layout(h: int, w: int) -> Layout:
    """The default layout (:func:`padded_plane`): stride-1 3x3 convs read it in place."""
    return Layout(padded_plane(h, w), padded_origin(w), padded_pitch(w))


def tight_layout(c: int, h: int, w: int, vw: int) -> Layout:
    """Rows of exactly the image's width between a zero row above and below, planes rounded to whole vectors:
    the planes of the shifted kernel on tight rows (:func:`tight_rows`), so it reads them in place. Rows of half
    a vector come with the second, one-row-shifted copy that kernel reads (no prep pass, no barrier for it)."""
    plane = -(-(h + 2) * w // vw) * vw
    copy = -(-(c * plane + SLACK) // vw) * vw if 2 * w == vw else 0
    return Layout(plane, w, w, copy)
