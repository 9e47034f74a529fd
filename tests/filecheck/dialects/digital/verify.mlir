// RUN: aimcc opt %s --split-input-file --verify-diagnostics | filecheck %s

// The digital.kernel verifier: kind from the closed table (KERNELS) or onnx.<OpType>, arity and
// required parameters per kind.

builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "digital.kernel"(%x) <{kind = "gelu_erf", params = {}}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    %z = "digital.kernel"(%y) <{kind = "onnx.Relu", params = {}}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %z : tensor<4x8xf32>
  }
}
// CHECK:      %y = "digital.kernel"(%x) <{kind = "gelu_erf", params = {}}>
// CHECK-NEXT: %z = "digital.kernel"(%y) <{kind = "onnx.Relu", params = {}}>
// CHECK:      // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "digital.kernel"(%x) <{kind = "softmax", params = {}}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: digital.kernel: unknown kind 'softmax'
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %y = "digital.kernel"(%x, %x) <{kind = "silu", params = {}}> : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: digital.kernel 'silu': 2 operands
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<4x8xf32>, %g: tensor<8xf32>) -> tensor<4x8xf32> {
    %y = "digital.kernel"(%x, %g) <{kind = "layer_norm", params = {}}> : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
    func.return %y : tensor<4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: digital.kernel 'layer_norm': missing attribute 'epsilon'
// CHECK-NOT:  // -----
