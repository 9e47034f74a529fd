// RUN: aimcc opt %s --split-input-file --verify-diagnostics | filecheck %s

// The nn verifiers: shapes of linear (weight, input, bias, LoRA A/B), attention, norms,
// the activation kinds, embedding and rope.

builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>, %ids: tensor<1x4xi64>) -> tensor<1x4x8xf32> {
    %w = graph.weight "ok_w" : tensor<16x8xf32> = dense<1.000000e-02>
    %b = graph.weight "ok_b" : tensor<8xf32> = dense<1.000000e-02>
    %g = graph.weight "ok_g" : tensor<16xf32> = dense<1.000000e-02>
    %t = graph.weight "ok_t" : tensor<10x16xf32> = dense<1.000000e-02>
    %e = nn.embedding %t[%ids] : (tensor<10x16xf32>, tensor<1x4xi64>) -> tensor<1x4x16xf32>
    %n = nn.layer_norm %e, %g, %g {epsilon = 1.000000e-05 : f32} : tensor<1x4x16xf32>, tensor<16xf32>, tensor<16xf32>
    %r = nn.rms_norm %n, %g {epsilon = 1.000000e-05 : f32} : tensor<1x4x16xf32>, tensor<16xf32>
    %a = nn.activation "gelu_tanh" %r : tensor<1x4x16xf32>
    %y = nn.linear %a, %w bias %b {layer = "l"} : (tensor<1x4x16xf32>, tensor<16x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    func.return %y : tensor<1x4x8xf32>
  }
}
// CHECK:      %e = nn.embedding %t[%ids] : (tensor<10x16xf32>, tensor<1x4xi64>) -> tensor<1x4x16xf32>
// CHECK-NEXT: %n = nn.layer_norm %e, %g, %g {epsilon = 1.000000e-05 : f32} : tensor<1x4x16xf32>, tensor<16xf32>, tensor<16xf32>
// CHECK-NEXT: %r = nn.rms_norm %n, %g {epsilon = 1.000000e-05 : f32} : tensor<1x4x16xf32>, tensor<16xf32>
// CHECK-NEXT: %a = nn.activation "gelu_tanh" %r : tensor<1x4x16xf32>
// CHECK-NEXT: %y = nn.linear %a, %w bias %b {layer = "l"} : (tensor<1x4x16xf32>, tensor<16x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
// CHECK:      // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x12xf32>) -> tensor<1x4x8xf32> {
    %w = graph.weight "k_w" : tensor<16x8xf32> = dense<1.000000e-02>
    %y = nn.linear %x, %w {layer = "l"} : (tensor<1x4x12xf32>, tensor<16x8xf32>) -> tensor<1x4x8xf32>
    func.return %y : tensor<1x4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: nn.linear: input (1, 4, 12) does not end in K=16
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x8xf32> {
    %w = graph.weight "b_w" : tensor<16x8xf32> = dense<1.000000e-02>
    %b = graph.weight "b_b" : tensor<16xf32> = dense<1.000000e-02>
    %y = nn.linear %x, %w bias %b {layer = "l"} : (tensor<1x4x16xf32>, tensor<16x8xf32>, tensor<16xf32>) -> tensor<1x4x8xf32>
    func.return %y : tensor<1x4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: nn.linear: bias must be [8]
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x8xf32> {
    %w = graph.weight "l_w" : tensor<16x8xf32> = dense<1.000000e-02>
    %a = graph.weight "l_a" : tensor<16x2xf32> = dense<1.000000e-02>
    %b = graph.weight "l_b" : tensor<4x8xf32> = dense<1.000000e-02>
    %y = nn.linear %x, %w lora(%a, %b) {layer = "l", lora_scale = 1.0 : f32} : (tensor<1x4x16xf32>, tensor<16x8xf32>, tensor<16x2xf32>, tensor<4x8xf32>) -> tensor<1x4x8xf32>
    func.return %y : tensor<1x4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: nn.linear: lora_b must be [2, 8], got (4, 8)
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x8xf32> {
    %w = graph.weight "s_w" : tensor<16x8xf32> = dense<1.000000e-02>
    %a = graph.weight "s_a" : tensor<16x2xf32> = dense<1.000000e-02>
    %b = graph.weight "s_b" : tensor<2x8xf32> = dense<1.000000e-02>
    %y = nn.linear %x, %w lora(%a, %b) {layer = "l"} : (tensor<1x4x16xf32>, tensor<16x8xf32>, tensor<16x2xf32>, tensor<2x8xf32>) -> tensor<1x4x8xf32>
    func.return %y : tensor<1x4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: nn.linear: lora_a, lora_b and lora_scale go together
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%q: tensor<1x4x16x8xf32>, %kt: tensor<1x4x4x16xf32>, %v: tensor<1x4x16x8xf32>) -> tensor<1x4x16x8xf32> {
    %a = nn.attention %q, %kt, %v {scale = 5.000000e-01 : f32} : (tensor<1x4x16x8xf32>, tensor<1x4x4x16xf32>, tensor<1x4x16x8xf32>) -> tensor<1x4x16x8xf32>
    func.return %a : tensor<1x4x16x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: nn.attention: q (1, 4, 16, 8) and kt (1, 4, 4, 16) disagree on the head dim
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x16xf32> {
    %y = nn.activation "relu" %x : tensor<1x4x16xf32>
    func.return %y : tensor<1x4x16xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: nn.activation: unknown activation 'relu'
// CHECK-NEXT: // -----

// -----
// Elementwise ops (activation, norms, rope) give a result of the input's type; their custom
// format cannot even spell another, the generic one can.
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x8xf32> {
    %y = "nn.activation"(%x) <{kind = "silu"}> : (tensor<1x4x16xf32>) -> tensor<1x4x8xf32>
    func.return %y : tensor<1x4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: nn.activation: result 'result' at position 0 does not verify: attribute tensor<1x4x16xf32> expected from variable 'T', but got tensor<1x4x8xf32>
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x16xf32> {
    %g = graph.weight "ln_g" : tensor<8xf32> = dense<1.000000e-02>
    %b = graph.weight "ln_b" : tensor<16xf32> = dense<1.000000e-02>
    %y = nn.layer_norm %x, %g, %b {epsilon = 1.000000e-05 : f32} : tensor<1x4x16xf32>, tensor<8xf32>, tensor<16xf32>
    func.return %y : tensor<1x4x16xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: nn.layer_norm: gamma must be (16,)
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%ids: tensor<1x4xi64>) -> tensor<1x4x8xf32> {
    %t = graph.weight "emb" : tensor<10x16xf32> = dense<1.000000e-02>
    %y = nn.embedding %t[%ids] : (tensor<10x16xf32>, tensor<1x4xi64>) -> tensor<1x4x8xf32>
    func.return %y : tensor<1x4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: nn.embedding: result shape mismatch
