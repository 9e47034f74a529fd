// RUN: aimcc opt %s -o %t.mlir
// RUN: aimcc opt %t.mlir -o %t.again.mlir
// RUN: cmp %t.mlir %t.again.mlir
// RUN: filecheck %s < %t.mlir
// RUN: sed -e 's/ reads \[0\]\] : (tensor<4x8xf32>) -> tensor<4x8xf32>$/] : (tensor<4x8xf32>) -> tensor<4x8xf32>/' %s > %t.bad.mlir
// RUN: not aimcc opt %t.bad.mlir 2>&1 | filecheck %s --check-prefix=BAD

// (cmp, not diff: lit runs its builtin diff with its own PYTHONPATH, which stays for the next
// lines of the test and would run another aimcc.)

// The text of calls, views and kernels prints and parses back the same. A kernel prints its
// kind, element type, dims in [], scalars in {} (as MLIR prints an f64; an infinity as its
// bits in hex), then `repeat`, `along` and `unit` unless they are the defaults. A call prints
// its callee, operands, cluster, column split, kernels each with the operands it reads,
// why no kernel computes it, its ONNX params (integer lists as array<i64: ...>) and the other
// attributes. The generic form parses too and prints in the custom one; dims and scalars
// print sorted by name.

builtin.module {
  func.func @main(%x: tensor<4x8xf32>, %m: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<8x4xf32>, tensor<2x8xf32>) {
    %w = cluster.call "onnx.Where"(%m, %x) on cluster 1 kernels [#cluster.kernel<where_const f32 [M = 4, N = 8] {a = 0xfff0000000000000, b = 0.1} along M> reads [0]] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
    %g = cluster.call "gelu_erf"(%w) on cluster 0 kernels [#cluster.kernel<gelu_erf f32 [N = 32] along N unit 8> reads [0]] : (tensor<4x8xf32>) -> tensor<4x8xf32>
    %a = cluster.call "onnx.Add"(%g, %x) on cluster 2 split 2 kernels [#cluster.kernel<add f32 [M = 4, N = 8] along M> reads [0, 1], #cluster.kernel<gelu_tanh f32 [N = 32] repeat 2 along N unit 8> reads []] params {layer = "proj", scale = 2.0 : f32} {note = "kept"} : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
    %r = cluster.call "onnx.Relu"(%a) on cluster 0 unsupported "no RISC-V kernel for onnx.Relu" : (tensor<4x8xf32>) -> tensor<4x8xf32>
    %s = "cluster.call"(%r) <{callee = "softmax", kernels = [#cluster.kernel<softmax f32 [N = 8, M = 4] along M>], reads = [array<i64: 0>], params = {}, cluster = 3 : i64}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    %t = cluster.view "Transpose"(%s) params {perm = array<i64: 1, 0>} : (tensor<4x8xf32>) -> tensor<8x4xf32>
    %p:2 = cluster.view "Split"(%s) params {axis = 0 : i64} : (tensor<4x8xf32>) -> (tensor<2x8xf32>, tensor<2x8xf32>)
    func.return %s, %t, %p#1 : tensor<4x8xf32>, tensor<8x4xf32>, tensor<2x8xf32>
  }
}

// CHECK:      %w = cluster.call "onnx.Where"(%m, %x) on cluster 1 kernels [#cluster.kernel<where_const f32 [M = 4, N = 8] {a = 0xfff0000000000000, b = 1.000000e-01} along M> reads [0]] : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
// CHECK-NEXT: %g = cluster.call "gelu_erf"(%w) on cluster 0 kernels [#cluster.kernel<gelu_erf f32 [N = 32] along N unit 8> reads [0]] : (tensor<4x8xf32>) -> tensor<4x8xf32>
// CHECK-NEXT: %a = cluster.call "onnx.Add"(%g, %x) on cluster 2 split 2 kernels [#cluster.kernel<add f32 [M = 4, N = 8] along M> reads [0, 1], #cluster.kernel<gelu_tanh f32 [N = 32] repeat 2 along N unit 8> reads []] params {layer = "proj", scale = 2.000000e+00 : f32} {note = "kept"} : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
// CHECK-NEXT: %r = cluster.call "onnx.Relu"(%a) on cluster 0 unsupported "no RISC-V kernel for onnx.Relu" : (tensor<4x8xf32>) -> tensor<4x8xf32>
// CHECK-NEXT: %s = cluster.call "softmax"(%r) on cluster 3 kernels [#cluster.kernel<softmax f32 [M = 4, N = 8] along M> reads [0]] : (tensor<4x8xf32>) -> tensor<4x8xf32>
// CHECK-NEXT: %t = cluster.view "Transpose"(%s) params {perm = array<i64: 1, 0>} : (tensor<4x8xf32>) -> tensor<8x4xf32>
// CHECK-NEXT: %p, %p_1 = cluster.view "Split"(%s) params {axis = 0 : i64} : (tensor<4x8xf32>) -> (tensor<2x8xf32>, tensor<2x8xf32>)
// CHECK-NEXT: func.return %s, %t, %p_1

// BAD: error: {{.*}}roundtrip.mlir.tmp.bad.mlir:{{[0-9]+}}:{{[0-9]+}}: Expected 'reads' (the operands the kernel reads)
