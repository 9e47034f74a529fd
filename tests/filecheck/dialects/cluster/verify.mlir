// RUN: aimcc opt %s --split-input-file --verify-diagnostics | filecheck %s

// The cluster dialect's verifiers: a kernel attribute's kind is one of the RISC-V kernels
// (closed set) with the dims and scalars it needs, runs at least once on whole tokens along
// its token dim; a call lists one operand list per kernel (the generic form can say
// otherwise), reads only its operands, has kernels or a reason, and splits only kernels that
// split by columns; a view is a re-indexing op of a tensor.

builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = cluster.call "gelu_erf"(%x) on cluster 0 kernels [#cluster.kernel<gelu_erf f32 [N = 32] along N unit 8> reads [0]] : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK:      %y = cluster.call "gelu_erf"(%x) on cluster 0 kernels
// CHECK:      // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = cluster.call "gelu_erf"(%x) on cluster 0 kernels [#cluster.kernel<gelu f32 [N = 32] along N unit 8> reads [0]] : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.kernel: unknown kind 'gelu'
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = cluster.call "layer_norm"(%x) on cluster 0 kernels [#cluster.kernel<layer_norm f32 [M = 4, N = 8] along M> reads [0]] : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.kernel: riscv backend: kernel layer_norm needs attrs ('eps',), got []
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = cluster.call "gelu_erf"(%x) on cluster 0 kernels [#cluster.kernel<gelu_erf f32 [N = 32] along N unit 5> reads [0]] : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.kernel: no dim 'N' of 5-element tokens
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = cluster.call "gelu_erf"(%x) on cluster 0 kernels [#cluster.kernel<gelu_erf f32 [N = 32] repeat 0> reads [0]] : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.kernel: repeat and unit must be positive
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = cluster.call "gelu_erf"(%x) on cluster 0 kernels [#cluster.kernel<gelu_erf f32 [N = 32] along N unit 8> reads [1]] : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.call: a kernel reads beyond 1 operands
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "cluster.call"(%x) <{callee = "gelu_erf", kernels = [#cluster.kernel<gelu_erf f32 [N = 32] along N unit 8>], reads = [], params = {}, cluster = 0 : i64}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.call: 1 kernels but 0 operand lists
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = cluster.call "onnx.Relu"(%x) on cluster 0 : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.call: no kernels and no reason ('unsupported')
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = cluster.call "softmax"(%x) on cluster 0 split 2 kernels [#cluster.kernel<softmax f32 [M = 4, N = 8] along M> reads [0]] : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.call 'softmax': its kernels do not split
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = cluster.view "Relu"(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.view: 'Relu' is not a view
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = cluster.view "Reshape"() : () -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.view: needs the tensor it views
// CHECK-NOT:  // -----
