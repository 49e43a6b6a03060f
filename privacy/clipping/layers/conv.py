"""Conv2D (channels_last, groups = 1; any stride, padding, dilation): per-example kernel norms.

With A_i [T, D] the layer input unfolded into patches (T output positions, D = kh*kw*C_in, ordered like
the Keras kernel reshaped to [D, p]) and G_i [T, p] the gradient of the summed loss at the
pre-activation output, example i's kernel gradient is A_i^T G_i. Its squared norm comes from the ghost
form <A A^T, G G^T> (~T^2 per example) or from the explicit gradient (~T*D*p), as `use_ghost_norm`
decides (Bu et al.'s mixed rule where memory matters); the bias adds ||sum_t G_i[t]||^2.

Book-keeping, no second backward pass: the clipped sum sum_i w_i A_i^T G_i is the explicit gradients
weighted, or (ghost form) one `conv2d_backprop_filter` of the input with w * G.

How A is formed matters on CPU (measured in benchmarks/dp_overhead): layers with few kernel offsets and
many positions never build the patch tensor (one batched matmul per offset over a shifted view of the
input, no [B, T, D] copy); the others unfold patches with a one-hot-kernel convolution (small patches)
or `tf.image.extract_patches`. Memory: the explicit form keeps B*D*p floats, the ghost form B*T*T.
"""

from __future__ import annotations

import tensorflow as tf

from privacy.clipping.layers.base import LayerRecord, call_without_activation, use_ghost_norm

# Up to this patch size a one-hot-kernel convolution (one oneDNN op) unfolds patches faster than
# tf.image.extract_patches on CPU.
IDENTITY_CONV_MAX_PATCH = 128
# Per-offset products instead of a patch tensor: for at most this many kernel offsets, at least this
# many input channels (narrower views make inefficient matmuls), and patches of at least this many
# floats per example.
OFFSETS_MAX_KERNEL_POSITIONS = 9
OFFSETS_MIN_CHANNELS = 16
OFFSETS_MIN_PATCH_FLOATS_PER_EXAMPLE = 16 * 1024


def unsupported(layer: tf.keras.layers.Conv2D) -> str | None:
    """Why this Conv2D has no rule (None: it has one)."""
    if layer.data_format != "channels_last":
        return "Conv2D with data_format='channels_first'"
    if getattr(layer, "groups", 1) != 1:
        return "Conv2D with groups > 1"
    return None


def patches(layer: tf.keras.layers.Conv2D, inputs: tf.Tensor) -> tf.Tensor:
    """[B, T, kh*kw*C_in]: the receptive field of every output position, in the kernel's order."""
    kh, kw = layer.kernel_size
    c_in = inputs.shape[-1]
    size = kh * kw * c_in
    if size <= IDENTITY_CONV_MAX_PATCH:
        one_hot = tf.reshape(tf.eye(size, dtype=inputs.dtype), [kh, kw, c_in, size])
        unfolded = tf.nn.conv2d(
            inputs,
            one_hot,
            strides=layer.strides,
            padding=layer.padding.upper(),
            dilations=layer.dilation_rate,
        )
    else:
        unfolded = tf.image.extract_patches(
            inputs,
            sizes=[1, kh, kw, 1],
            strides=[1, *layer.strides, 1],
            rates=[1, *layer.dilation_rate, 1],
            padding=layer.padding.upper(),
        )
    return tf.reshape(unfolded, [-1, unfolded.shape[1] * unfolded.shape[2], size])


def _padding(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int, int]:
    """(output size, pad before, pad after) along one axis, as TF's convolution computes them."""
    span = (kernel - 1) * dilation + 1
    if padding == "valid":
        return (size - span) // stride + 1, 0, 0
    out = -(-size // stride)  # ceil
    total = max((out - 1) * stride + span - size, 0)
    return out, total // 2, total - total // 2


def offset_views(layer: tf.keras.layers.Conv2D, inputs: tf.Tensor) -> list[tf.Tensor]:
    """The kh*kw shifted views [B, T, C_in] of the (padded) input, one per kernel offset, in kernel order."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
    out_h, top, bottom = _padding(inputs.shape[1], kh, sh, dh, layer.padding)
    out_w, left, right = _padding(inputs.shape[2], kw, sw, dw, layer.padding)
    x = (
        tf.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]])
        if top + bottom + left + right
        else inputs
    )
    views = []
    for i in range(kh):
        for j in range(kw):
            view = x[
                :, i * dh : i * dh + (out_h - 1) * sh + 1 : sh, j * dw : j * dw + (out_w - 1) * sw + 1 : sw, :
            ]
            views.append(tf.reshape(view, [-1, out_h * out_w, inputs.shape[-1]]))
    return views


class Conv2DRecord(LayerRecord):
    def __init__(self, layer: tf.keras.layers.Conv2D, inputs: tf.Tensor, z: tf.Tensor) -> None:
        self.layer, self.inputs, self.watched = layer, inputs, z
        kh, kw, c_in, p = layer.kernel.shape
        self.fan_in, self.fan_out = kh * kw * c_in, p
        self.positions = z.shape[1] * z.shape[2]
        self.ghost = use_ghost_norm(self.positions, self.fan_in, self.fan_out)
        self.by_offset = (
            kh * kw <= OFFSETS_MAX_KERNEL_POSITIONS
            and c_in >= OFFSETS_MIN_CHANNELS
            and self.positions * self.fan_in >= OFFSETS_MIN_PATCH_FLOATS_PER_EXAMPLE
        )
        self.per_example: tf.Tensor | None = None  # [B, p, D] in the explicit form

    def _g(self, grad: tf.Tensor) -> tf.Tensor:
        return tf.reshape(grad, [-1, self.positions, self.fan_out])  # [B, T, p]

    def squared_norms(self, grad: tf.Tensor) -> tf.Tensor:
        g = self._g(grad)
        if self.ghost:
            if self.by_offset:  # A A^T = sum over offsets of the views' Gram matrices
                views = offset_views(self.layer, self.inputs)
                aat = tf.add_n([tf.linalg.matmul(v, v, transpose_b=True) for v in views])
            else:
                a = patches(self.layer, self.inputs)
                aat = tf.linalg.matmul(a, a, transpose_b=True)
            norms = tf.reduce_sum(aat * tf.linalg.matmul(g, g, transpose_b=True), axis=[1, 2])
        else:
            if self.by_offset:
                views = offset_views(self.layer, self.inputs)
                parts = [tf.linalg.matmul(g, v, transpose_a=True) for v in views]  # each [B, p, C_in]
                self.per_example = tf.concat(parts, axis=2)
            else:
                self.per_example = tf.linalg.matmul(g, patches(self.layer, self.inputs), transpose_a=True)
            norms = tf.reduce_sum(tf.square(self.per_example), axis=[1, 2])
        if self.layer.use_bias:
            norms += tf.reduce_sum(tf.square(tf.reduce_sum(g, axis=1)), axis=1)
        return norms

    def clipped_sums(self, grad: tf.Tensor, weights: tf.Tensor) -> dict:
        weighted = grad * weights[:, None, None, None]
        if self.per_example is not None:
            kernel = tf.reshape(
                tf.transpose(tf.tensordot(weights, self.per_example, axes=1)), self.layer.kernel.shape
            )
        else:
            kernel = tf.compat.v1.nn.conv2d_backprop_filter(
                self.inputs,
                self.layer.kernel.shape,
                weighted,
                strides=[1, *self.layer.strides, 1],
                padding=self.layer.padding.upper(),
                dilations=[1, *self.layer.dilation_rate, 1],
            )
        out = {self.layer.kernel.ref(): kernel}
        if self.layer.use_bias:
            out[self.layer.bias.ref()] = tf.reduce_sum(weighted, axis=[0, 1, 2])
        return out


def forward(layer: tf.keras.layers.Conv2D, args: tuple, kwargs: dict):
    z, outputs = call_without_activation(layer, args, kwargs)
    return outputs, Conv2DRecord(layer, args[0], z)
