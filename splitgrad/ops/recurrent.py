"""Fused recurrent primitives: a whole SimpleRNN, LSTM or GRU sequence is one autograd op.

`Op.apply(x, w_ih, w_hh, b_ih, b_hh, h0[, c0], reverse=False)` with x of shape
(batch, time, features), W_ih (features, G·H), W_hh (H, G·H), biases (G·H,), states (batch, H).
Gate orders follow PyTorch: LSTM i|f|g|o, GRU r|z|n, SimpleRNN one block.

Forward projects every timestep's input with one GEMM, then loops over time doing one
(B, H)@(H, G·H) GEMM and in-place gate math per step into preallocated buffers, keeping the gate
activations for backward. Backward is backpropagation through time over the whole sequence: a
reverse loop with one (B, G·H)@(G·H, H) GEMM per step, then one GEMM each for dW_ih, dW_hh and
dx over all timesteps. Work is time-major inside, so every per-step slice is contiguous.

The sequences of a batch never mix, so both time loops run in row groups (one per BLAS thread)
on splitgrad's own thread team, and the big products use its `matmul` (see
_kernels/thread_team.py for why). The per-step products go through `PanelMatmul`, which avoids
OpenBLAS re-copying W_hh on every step. Where panels do not apply (a BLAS without its AVX-512
small-matrix kernel) and W_hh is big, one time loop runs instead, its per-step products split
by columns over the team (`ColumnSplit`): together the threads then copy W_hh once a step.

Output, batch-first: the hidden states (batch, time, H); with cell_out=True (the default) LSTM
appends the final cell state as one extra timestep, giving (batch, time + 1, H). With reverse=True
the input is read from the last timestep to the first and the outputs are in that processing order
(Keras `go_backwards`). `workspace=` (a `Workspace`) lets a layer reuse its large buffers.

Projected input: with `ids=` (integer (batch, time)) and w_ih None, x is a table (V, G·H) of
every id's input projection, e·W_ih for each embedding row e (layers/fusion.py makes it for an
Embedding feeding the layer). Step t of row b then looks up x[ids[b, t]] instead of multiplying,
and the table's gradient is each id's gate gradients summed; the product that made the table
gives dE and dW_ih from that (V × G·H) sum, so all three big input GEMMs shrink from
batch·time rows to V rows.

Per-example gradients (DP-SGD): `record=fill` (from layers/per_example.py's `fused_sites`)
makes backward hand the recorder the two linear sites, time-major, before the end-of-sequence
GEMMs: (x_t, δ of x_t·W_ih + b_ih) and (h_{t−1}, δ of h_{t−1}·W_hh + b_hh), the same δ for
SimpleRNN and LSTM (the biases are folded into one pre-activation), the x and h parts of GRU's.
The recorder then builds every weight gradient itself, so the op skips them.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .._kernels.compiled import recurrent_kernels
from .._kernels.panels import ColumnSplit, PanelMatmul, column_split
from .._kernels.thread_team import OnOwnThreads, matmul, row_groups, run_pieces
from .._kernels.workspace import empty
from ..tensor import Function
from .embedding import scatter_rows


class _Recurrence(OnOwnThreads, Function):
    """Shared driver: input projection, output packing and the end-of-sequence GEMMs.

    Subclasses give `prepare_scan` (buffers shared by all rows), `scan(rows)` (the forward time
    loop for one row slice), `prepare_bptt` and `bptt(rows)` (the same for backward).
    """

    gates = 1
    writes_grads = True  # the weight gradients go straight into the optimizer's buffers

    def _forward(
        self,
        x,
        w_ih,
        w_hh,
        b_ih,
        b_hh,
        h0,
        c0=None,
        reverse=False,
        workspace=None,
        cell_out=True,
        record=None,
        ids=None,
        **options,
    ):
        self.ws = ws = workspace
        self.record = record
        dtype = w_hh.dtype
        units = w_hh.shape[0]
        self.w_ih, self.w_hh, self.reverse = w_ih, w_hh, reverse
        bias = self.input_bias(b_ih, b_hh)  # constant over time: added once, to every step
        if ids is None:
            xs = x[:, ::-1] if reverse else x
            batch, steps, features = x.shape
            xt = self.xt = empty(ws, (steps, batch, features), dtype)
            np.copyto(xt, xs.transpose(1, 0, 2))
            proj = empty(ws, (steps, batch, w_ih.shape[1]), dtype)
            matmul(xt.reshape(steps * batch, features), w_ih, out=proj.reshape(steps * batch, -1))
            proj += bias
        else:
            # x is the table of every id's input projection (an Embedding's table times W_ih,
            # layers/fusion.py): each step's x_t·W_ih is a row lookup, not a product, and the
            # bias is added to the table's V rows instead of every step's.
            batch, steps = ids.shape
            self.table_rows = x.shape[0]
            self.ids = (ids[:, ::-1] if reverse else ids).T  # time-major, like the loops
            proj = empty(ws, (steps, batch, x.shape[1]), dtype)
            np.take(x + bias, self.ids, axis=0, out=proj, mode="clip")  # ids checked already
        # hs[0] is h0 and hs[t + 1] is h_t, so hs[:-1] is every step's previous state in one block.
        self.hs = empty(ws, (steps + 1, batch, units), dtype)
        self.hs[0] = h0
        # One time loop per row group, each with its own rows' products; or, for a big W_hh
        # without panels, one loop whose products are split by columns (panels.py says why).
        self.split = column_split(w_hh, batch)
        self.groups = [slice(0, batch)] if self.split else row_groups(batch)
        self.step_w = self.step_matmul()
        last_cell = self.prepare_scan(proj, b_ih, b_hh, c0, **options)
        run_pieces(partial(self.scan, rows) for rows in self.groups)
        self.step_w = None  # the panels are large (16 MB for the music model): drop them now
        extra = 0 if last_cell is None or not cell_out else 1
        out = empty(ws, (batch, steps + extra, units), dtype)
        out[:, :steps] = self.hs[1:].transpose(1, 0, 2)
        if extra:
            out[:, steps] = last_cell
        return out

    def _backward(self, g):
        steps, batch = self.hs.shape[0] - 1, self.hs.shape[1]
        dy = g[:, :steps].transpose(1, 0, 2)
        dc_last = g[:, steps] if g.shape[1] > steps else None
        self.step_w = self.step_matmul(transposed=True)
        dproj, drec, dh0, dc0 = self.prepare_bptt(dy, dc_last)
        run_pieces(partial(self.bptt, rows) for rows in self.groups)
        self.step_w = None
        width = dproj.shape[-1]
        dproj2 = dproj.reshape(steps * batch, width)
        drec2 = dproj2 if drec is dproj else drec.reshape(steps * batch, width)
        needs = self.needs
        if self.record is not None:  # the recorder takes the weight gradients from here
            self.record([(self.xt, dproj), (self.hs[:-1], drec)])
            needs = needs[:1] + [False] * 4 + needs[5:]
        dx = dw_ih = dw_hh = db_ih = db_hh = None
        if needs[0] and self.w_ih is None:  # the table's gradient: each id's rows summed
            dx = scatter_rows(self.ids.reshape(-1), dproj2, self.table_rows, self.ws)
        elif needs[0]:
            features = self.xt.shape[2]
            dxt = empty(self.ws, (steps, batch, features), dproj.dtype)
            matmul(dproj2, self.w_ih.T, out=dxt.reshape(steps * batch, features))
            dxb = dxt.transpose(1, 0, 2)
            dx = empty(self.ws, dxb.shape, dxb.dtype)  # batch-major copy, reused next step
            np.copyto(dx, dxb[:, ::-1] if self.reverse else dxb)
        dtype = dproj.dtype
        if needs[1]:
            out = self.grad_out(1, self.w_ih.shape, dtype)
            dw_ih = matmul(self.xt.reshape(steps * batch, -1).T, dproj2, out=out)
        if needs[2]:
            out = self.grad_out(2, self.w_hh.shape, dtype)
            dw_hh = matmul(self.hs[:-1].reshape(steps * batch, -1).T, drec2, out=out)
        if needs[3]:
            db_ih = np.add.reduce(dproj2, axis=0, out=self.grad_out(3, (width,), dtype))
        if needs[4]:
            if drec is dproj and db_ih is not None:
                db_hh = db_ih
            else:
                db_hh = np.add.reduce(drec2, axis=0, out=self.grad_out(4, (width,), dtype))
        grads = (dx, dw_ih, dw_hh, db_ih, db_hh, dh0)
        return grads + (dc0,) if len(needs) > 6 else grads

    def input_bias(self, b_ih, b_hh):
        """What is added to every step's x_t·W_ih before the loop: both biases (SimpleRNN and
        LSTM add them to one pre-activation)."""
        return b_ih + b_hh

    def step_matmul(self, transposed=False):
        """The per-step product with W_hh (forward) or W_hhᵀ (backward), shared by the groups."""
        w = self.w_hh.T if transposed else self.w_hh
        if self.split:
            return ColumnSplit(w)
        return PanelMatmul(w, max(rows.stop - rows.start for rows in self.groups), self.ws)

    def want_h0(self):
        return len(self.needs) > 5 and self.needs[5]


class SimpleRNNSeq(_Recurrence):
    """h_t = act(x_t·W_ih + b_ih + h_{t−1}·W_hh + b_hh), act tanh or relu; whole sequence."""

    def prepare_scan(self, proj, b_ih, b_hh, c0, activation="tanh"):
        if activation not in ("tanh", "relu"):
            raise ValueError(f"SimpleRNN activation must be 'tanh' or 'relu', got {activation!r}")
        self.activation = activation
        self.proj = proj

    def scan(self, r):
        proj, hs, w_hh = self.proj, self.hs, self.step_w
        rec = np.empty(hs[0, r].shape, hs.dtype)
        for t in range(proj.shape[0]):
            w_hh(hs[t, r], rec)
            h = hs[t + 1, r]
            np.add(proj[t, r], rec, out=h)
            if self.activation == "tanh":
                np.tanh(h, out=h)
            else:
                np.maximum(h, 0, out=h)

    def prepare_bptt(self, dy, dc_last):
        hs = self.hs
        self.dy = dy
        self.da = empty(self.ws, (dy.shape[0],) + hs.shape[1:], hs.dtype)
        self.dh0 = np.zeros(hs.shape[1:], hs.dtype) if self.want_h0() else None
        return self.da, self.da, self.dh0, None

    def bptt(self, r):
        hs, w_hh_t, dy, da = self.hs, self.step_w, self.dy, self.da
        dh = np.empty(hs[0, r].shape, hs.dtype)
        tmp = np.empty_like(dh)
        drec = np.zeros_like(dh)
        for t in range(dy.shape[0] - 1, -1, -1):
            np.add(dy[t, r], drec, out=dh)
            h = hs[t + 1, r]
            if self.activation == "tanh":
                np.multiply(h, h, out=tmp)
                np.subtract(1, tmp, out=tmp)
            else:
                np.greater(h, 0, out=tmp)
            np.multiply(dh, tmp, out=da[t, r])
            if t or self.dh0 is not None:
                w_hh_t(da[t, r], drec)
        if self.dh0 is not None:
            self.dh0[r] = drec


class LSTMSeq(_Recurrence):
    """LSTM over a sequence, gates i|f|g|o: c_t = f·c_{t−1} + i·g, h_t = o·tanh(c_t)."""

    gates = 4

    def prepare_scan(self, proj, b_ih, b_hh, c0):
        steps, batch, width = proj.shape
        units = width // 4
        dtype = proj.dtype
        # sigmoid(v) = 0.5·tanh(0.5·v) + 0.5, so one tanh over all four gates (g keeps scale 1)
        # activates the whole row: four ufunc calls per step instead of one per gate.
        self.scale = np.full(width, 0.5, dtype)
        self.scale[2 * units : 3 * units] = 1.0
        self.shift = np.full(width, 0.5, dtype)
        self.shift[2 * units : 3 * units] = 0.0
        self.cs = empty(self.ws, (steps + 1, batch, units), dtype)
        self.cs[0] = c0
        self.tcs = empty(self.ws, (steps, batch, units), dtype)
        self.acts = proj
        return self.cs[steps]

    def scan(self, r):
        acts, cs, tcs, hs, w_hh = self.acts, self.cs, self.tcs, self.hs, self.step_w
        scale, shift = self.scale, self.shift
        units = hs.shape[2]
        u2, u3 = 2 * units, 3 * units
        rec = np.empty(acts[0, r].shape, acts.dtype)
        tmp = np.empty(hs[0, r].shape, acts.dtype)
        jit = recurrent_kernels(acts.dtype)
        for t in range(acts.shape[0]):
            z = acts[t, r]
            w_hh(hs[t, r], rec)
            if jit is not None:  # the same steps in fewer calls (same bits; recurrent_jit.py)
                jit.lstm_gates_in(z, rec, scale)
                np.tanh(z, out=z)
                jit.lstm_cell(z, scale, shift, cs[t, r], cs[t + 1, r])
                np.tanh(cs[t + 1, r], out=tcs[t, r])
                np.multiply(z[:, u3:], tcs[t, r], out=hs[t + 1, r])
                continue
            z += rec
            z *= scale
            np.tanh(z, out=z)
            z *= scale
            z += shift
            c = cs[t + 1, r]
            np.multiply(z[:, units:u2], cs[t, r], out=c)
            np.multiply(z[:, :units], z[:, u2:u3], out=tmp)
            c += tmp
            np.tanh(c, out=tcs[t, r])
            np.multiply(z[:, u3:], tcs[t, r], out=hs[t + 1, r])

    def prepare_bptt(self, dy, dc_last):
        acts, hs = self.acts, self.hs
        dtype = acts.dtype
        units = hs.shape[2]
        self.dy, self.dc_last = dy, dc_last
        self.dgates = empty(self.ws, acts.shape, dtype)
        # The NumPy path's o·(1 − tanh²c), for all steps (the compiled step needs none).
        compiled = recurrent_kernels(dtype) is not None
        self.dtanh = None if compiled else empty(self.ws, self.tcs.shape, dtype)
        self.dh0 = np.zeros(hs.shape[1:], dtype) if self.want_h0() else None
        want_c0 = len(self.needs) > 6 and self.needs[6]
        self.dc0 = np.zeros((hs.shape[1], units), dtype) if want_c0 else None
        return self.dgates, self.dgates, self.dh0, self.dc0

    def bptt(self, r):
        """With dh = dy_t + dh_rec and dc carried back: dc += dh·o·(1 − tanh²c),
        d(i|f|g) = dc·(g | c_{t−1} | i)·σ'/tanh', do = dh·tanh c·σ', dc_{t−1} = dc·f."""
        acts, cs, tcs, w_hh_t = self.acts[:, r], self.cs[:, r], self.tcs[:, r], self.step_w
        dy, dgates = self.dy[:, r], self.dgates[:, r]
        steps, rows, width = acts.shape
        dh = np.empty((rows, width // 4), acts.dtype)
        drec = np.zeros_like(dh)
        dc = (
            np.zeros_like(dh) if self.dc_last is None else np.array(self.dc_last[r], dtype=dh.dtype)
        )
        jit = recurrent_kernels(acts.dtype)
        if jit is None:
            self._bptt_numpy(r, dh, drec, dc)
        else:
            # Each step's elementwise work in one compiled pass (the same bits as below).
            one, zero = acts.dtype.type(1), acts.dtype.type(0)
            for t in range(steps - 1, -1, -1):
                jit.lstm_step_backward(
                    acts[t], cs[t], tcs[t], dy[t], drec, dc, dh, dgates[t], one, zero
                )
                if t or self.dh0 is not None:
                    w_hh_t(dgates[t], drec)
        if self.dh0 is not None:
            self.dh0[r] = drec
        if self.dc0 is not None:
            self.dc0[r] = dc

    def _bptt_numpy(self, r, dh, drec, dc):
        """`bptt` in NumPy calls (the fallback where numba is missing)."""
        acts, cs, tcs, w_hh_t = self.acts[:, r], self.cs[:, r], self.tcs[:, r], self.step_w
        dy, dgates, dtanh = self.dy[:, r], self.dgates[:, r], self.dtanh[:, r]
        steps, rows, width = acts.shape
        units = width // 4
        u2, u3 = 2 * units, 3 * units
        # What depends only on the forward values is computed a block of steps at a time (a few
        # ufunc calls per block instead of a dozen small ones per step; a block stays in cache):
        # the activation derivative from the activated value y (sigmoid y − y², tanh 1 − y²,
        # as a + y·(b − y) with per-column a, b) times the factor that multiplies dc (or dh for
        # o) in each gate, and o·(1 − tanh²c), which carries dh into dc.
        a = np.zeros(width, acts.dtype)
        a[u2:u3] = 1.0
        b = np.ones(width, acts.dtype)
        b[u2:u3] = 0.0
        block = max(1, (1 << 18) // (rows * width * acts.itemsize))
        tmp = np.empty_like(dh)
        for end in range(steps, 0, -block):
            ts = slice(max(0, end - block), end)
            z, dz, dt = acts[ts], dgates[ts], dtanh[ts]
            np.subtract(b, z, out=dz)
            dz *= z
            dz += a
            dz[..., :units] *= z[..., u2:u3]  # di: g
            dz[..., units:u2] *= cs[ts.start : ts.stop]  # df: c_{t−1} (cs[t] is c_{t−1})
            dz[..., u2:u3] *= z[..., :units]  # dg: i
            dz[..., u3:] *= tcs[ts]  # do: tanh c
            np.multiply(tcs[ts], tcs[ts], out=dt)
            np.subtract(1, dt, out=dt)
            dt *= z[..., u3:]
            for t in range(end - 1, ts.start - 1, -1):
                np.add(dy[t], drec, out=dh)
                np.multiply(dh, dtanh[t], out=tmp)
                dc += tmp
                dg = dgates[t]
                ifg = dg[:, :u3].reshape(rows, 3, units)  # a view: splits only the last axis
                ifg *= dc[:, None, :]
                dg[:, u3:] *= dh
                dc *= acts[t, :, units:u2]
                if t or self.dh0 is not None:
                    w_hh_t(dg, drec)


class GRUSeq(_Recurrence):
    """GRU over a sequence, gates r|z|n: n = tanh(x·W_in + b_in + r·(h·W_hn + b_hn)),
    h_t = (1 − z)·n + z·h_{t−1} (PyTorch's reset-after-matmul form)."""

    gates = 3

    def input_bias(self, b_ih, b_hh):
        return b_ih  # b_hn stays inside r·(h·W_hn + b_hn)

    def prepare_scan(self, proj, b_ih, b_hh, c0):
        self.b_hh = b_hh
        # h·W_hh + b_hh per step: its n block is needed again in backward.
        self.hproj = empty(self.ws, proj.shape, proj.dtype)
        self.acts = proj

    def scan(self, r):
        acts, hproj, hs, w_hh, b_hh = self.acts, self.hproj, self.hs, self.step_w, self.b_hh
        units = hs.shape[2]
        u2 = 2 * units
        tmp = np.empty(hs[0, r].shape, acts.dtype)
        for t in range(acts.shape[0]):
            xz, hz = acts[t, r], hproj[t, r]
            w_hh(hs[t, r], hz)
            hz += b_hh
            rz = xz[:, :u2]
            rz += hz[:, :u2]
            rz *= 0.5  # sigmoid via tanh, as in LSTMSeq
            np.tanh(rz, out=rz)
            rz *= 0.5
            rz += 0.5
            n = xz[:, u2:]
            np.multiply(xz[:, :units], hz[:, u2:], out=tmp)
            n += tmp
            np.tanh(n, out=n)
            np.subtract(hs[t, r], n, out=tmp)
            tmp *= xz[:, units:u2]
            np.add(n, tmp, out=hs[t + 1, r])

    def prepare_bptt(self, dy, dc_last):
        acts, hs = self.acts, self.hs
        self.dy = dy
        self.dxp = empty(self.ws, acts.shape, acts.dtype)
        self.dhp = empty(self.ws, acts.shape, acts.dtype)
        self.dh0 = np.zeros(hs.shape[1:], hs.dtype) if self.want_h0() else None
        return self.dxp, self.dhp, self.dh0, None

    def bptt(self, rows):
        acts, hproj, hs, w_hh_t = self.acts, self.hproj, self.hs, self.step_w
        dy, dxp, dhp = self.dy, self.dxp, self.dhp
        steps, _, width = acts.shape
        units = width // 3
        u2 = 2 * units
        dh = np.empty(hs[0, rows].shape, hs.dtype)
        tmp = np.empty_like(dh)
        tmp2 = np.empty_like(dh)
        drec = np.zeros_like(dh)
        for t in range(steps - 1, -1, -1):
            z3 = acts[t, rows]
            r, z, n = z3[:, :units], z3[:, units:u2], z3[:, u2:]
            dxt, dht = dxp[t, rows], dhp[t, rows]
            dr, dz, dn = dxt[:, :units], dxt[:, units:u2], dxt[:, u2:]
            np.add(dy[t, rows], drec, out=dh)
            np.subtract(1, z, out=tmp)  # dn = dh·(1 − z)·(1 − n²)
            tmp *= dh
            np.multiply(n, n, out=tmp2)
            np.subtract(1, tmp2, out=tmp2)
            np.multiply(tmp, tmp2, out=dn)
            np.subtract(hs[t, rows], n, out=tmp)  # dz = dh·(h − n)·z·(1 − z)
            tmp *= dh
            np.subtract(1, z, out=tmp2)
            tmp2 *= z
            np.multiply(tmp, tmp2, out=dz)
            np.subtract(1, r, out=tmp2)  # dr = dn·(h·W_hn + b_hn)·r·(1 − r)
            tmp2 *= r
            np.multiply(dn, hproj[t, rows, u2:], out=tmp)
            np.multiply(tmp, tmp2, out=dr)
            dht[:, :u2] = dxt[:, :u2]
            np.multiply(dn, r, out=dht[:, u2:])
            if t or self.dh0 is not None:
                w_hh_t(dht, drec)
                np.multiply(dh, z, out=tmp)
                drec += tmp
        if self.dh0 is not None:
            self.dh0[rows] = drec
