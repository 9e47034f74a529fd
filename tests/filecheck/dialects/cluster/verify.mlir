// RUN: aimcc opt %s --split-input-file --verify-diagnostics | filecheck %s

// The cluster dialect's verifiers: a kernel attribute's kind is one of the RISC-V kernels
// (closed set) with the dims and scalars it needs and whole tokens along its token dim; a call
// lists one operand list per kernel, reads only its operands, and has kernels or a reason;
// a view is a re-indexing op.

builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "cluster.call"(%x) <{callee = "gelu_erf", kernels = [#cluster.kernel<"gelu_erf", "f32", {N = 32 : i64}, {}, 1 : i64, "N", 8 : i64>], reads = [[0 : i64]], params = {}, cluster = 0 : i64}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK:      %y = "cluster.call"(%x) <{callee = "gelu_erf"
// CHECK:      // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "cluster.call"(%x) <{callee = "gelu_erf", kernels = [#cluster.kernel<"gelu", "f32", {N = 32 : i64}, {}, 1 : i64, "N", 8 : i64>], reads = [[0 : i64]], params = {}, cluster = 0 : i64}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.kernel: unknown kind 'gelu'
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "cluster.call"(%x) <{callee = "layer_norm", kernels = [#cluster.kernel<"layer_norm", "f32", {M = 4 : i64, N = 8 : i64}, {}, 1 : i64, "M", 1 : i64>], reads = [[0 : i64]], params = {}, cluster = 0 : i64}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.kernel: riscv backend: kernel layer_norm needs attrs ('eps',), got []
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "cluster.call"(%x) <{callee = "gelu_erf", kernels = [#cluster.kernel<"gelu_erf", "f32", {N = 32 : i64}, {}, 1 : i64, "N", 5 : i64>], reads = [[0 : i64]], params = {}, cluster = 0 : i64}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.kernel: no dim 'N' of 5-element tokens
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "cluster.call"(%x) <{callee = "gelu_erf", kernels = [#cluster.kernel<"gelu_erf", "f32", {N = 32 : i64}, {}, 1 : i64, "N", 8 : i64>], reads = [[1 : i64]], params = {}, cluster = 0 : i64}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.call: a kernel reads beyond 1 operands
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "cluster.call"(%x) <{callee = "onnx.Relu", kernels = [], reads = [], params = {}, cluster = 0 : i64}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.call: no kernels and no reason ('unsupported')
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "cluster.view"(%x) <{view = "Relu", params = {}}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: cluster.view: 'Relu' is not a view
// CHECK-NOT:  // -----
