// RUN: aimcc opt %s --split-input-file --verify-diagnostics | filecheck %s

// The aimc verifiers: each part below is rejected with its diagnostic (a valid tiled layer
// first, which prints back).

builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x16xf32> {
    %w = graph.weight "ok" : tensor<16x16xf32> = dense<1.000000e-02>
    %t = aimc.program %w rows [0, 16] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<16x16>
    %p = aimc.mvm %x, %t : (tensor<1x4x16xf32>, !aimc.tile<16x16>) -> tensor<1x4x16xf32>
    %b = graph.weight "b" : tensor<16xf32> = dense<5.000000e-01>
    %y = aimc.accumulate %p bias %b grid [1, 1] {layer = "l"} : (tensor<1x4x16xf32>, tensor<16xf32>) -> tensor<1x4x16xf32>
    func.return %y : tensor<1x4x16xf32>
  }
}
// CHECK:      %y = aimc.accumulate %p bias %b grid [1, 1] {layer = "l"} : (tensor<1x4x16xf32>, tensor<16xf32>) -> tensor<1x4x16xf32>
// CHECK:      // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x8xf32> {
    %w = graph.weight "m" : tensor<8x8xf32> = dense<1.000000e-02>
    %y = aimc.matmul %x, %w {layer = "l"} : (tensor<1x4x16xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
    func.return %y : tensor<1x4x8xf32>
  }
}
// CHECK-NEXT: error: {{.*}}verify.mlir: IR does not verify: aimc.matmul: shapes (1, 4, 16) @ (8, 8) mismatch
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main() {
    %w = graph.weight "outside" : tensor<16x16xf32> = dense<1.000000e-02>
    %t = aimc.program %w rows [0, 8] cols [8, 24] : tensor<16x16xf32> -> !aimc.tile<16x16>
    func.return
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: aimc.program: slice [0:8, 8:24] outside 16x16
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main() {
    %w = graph.weight "big" : tensor<16x16xf32> = dense<1.000000e-02>
    %t = aimc.program %w rows [0, 16] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<8x8>
    func.return
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: aimc.program: slice 16x16 does not fit a 8x8 tile
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x16xf32> {
    %w = graph.weight "cols" : tensor<16x16xf32> = dense<1.000000e-02>
    %t = aimc.program %w rows [0, 16] cols [0, 8] : tensor<16x16xf32> -> !aimc.tile<16x8>
    %p = aimc.mvm %x, %t : (tensor<1x4x16xf32>, !aimc.tile<16x8>) -> tensor<1x4x16xf32>
    func.return %p : tensor<1x4x16xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: aimc.mvm: result must have the tile's column count
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x16xf32> {
    %w = graph.weight "grid" : tensor<16x16xf32> = dense<1.000000e-02>
    %t = aimc.program %w rows [0, 16] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<16x16>
    %p = aimc.mvm %x, %t : (tensor<1x4x16xf32>, !aimc.tile<16x16>) -> tensor<1x4x16xf32>
    %y = aimc.accumulate %p grid [2, 1] {layer = "l"} : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
    func.return %y : tensor<1x4x16xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: aimc.accumulate: grid 2x1 needs 2 partials
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x16xf32> {
    %w = graph.weight "grid0" : tensor<16x16xf32> = dense<1.000000e-02>
    %t = aimc.program %w rows [0, 16] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<16x16>
    %p = aimc.mvm %x, %t : (tensor<1x4x16xf32>, !aimc.tile<16x16>) -> tensor<1x4x16xf32>
    %y = aimc.accumulate %p grid [-1, -1] {layer = "l"} : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
    func.return %y : tensor<1x4x16xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: aimc.accumulate: grid -1x-1 must be at least 1x1
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main() {
    %w = graph.weight "three" : tensor<16x16xf32> = dense<1.000000e-02>
    %t = aimc.program %w rows [0, 8, 16] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<16x16>
    func.return
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: aimc.program: rows must be 2 integers, got 3
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x16xf32> {
    %w = graph.weight "i32" : tensor<16x16xf32> = dense<1.000000e-02>
    %t = "aimc.program"(%w) <{rows = array<i32: 0, 16>, cols = array<i64: 0, 16>}> : (tensor<16x16xf32>) -> !aimc.tile<16x16>
    func.return %x : tensor<1x4x16xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: aimc.program: {{.*}}i64{{.*}}
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>) -> tensor<1x4x16xf32> {
    %y = aimc.accumulate %x grid [1, 1] {layer = "l"} : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
    func.return %y : tensor<1x4x16xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: aimc.accumulate: partials must come from aimc.mvm
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>, %c: tensor<16xf32>) -> tensor<1x4x16xf32> {
    %w = graph.weight "ok" : tensor<16x16xf32> = dense<1.000000e-02>
    %t = aimc.program %w rows [0, 16] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<16x16>
    %p = aimc.mvm %x, %t : (tensor<1x4x16xf32>, !aimc.tile<16x16>) -> tensor<1x4x16xf32>
    %b = graph.weight "b" : tensor<8xf32> = dense<5.000000e-01>
    %y = aimc.accumulate %p bias %b grid [1, 1] : (tensor<1x4x16xf32>, tensor<8xf32>) -> tensor<1x4x16xf32>
    func.return %y : tensor<1x4x16xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: aimc.accumulate: bias must be [16]
// CHECK-NEXT: // -----

// -----
builtin.module {
  func.func @main(%x: tensor<1x4x16xf32>, %c: tensor<16xf32>) -> tensor<1x4x16xf32> {
    %w = graph.weight "ok" : tensor<16x16xf32> = dense<1.000000e-02>
    %t = aimc.program %w rows [0, 16] cols [0, 16] : tensor<16x16xf32> -> !aimc.tile<16x16>
    %p = aimc.mvm %x, %t : (tensor<1x4x16xf32>, !aimc.tile<16x16>) -> tensor<1x4x16xf32>
    %y = aimc.accumulate %p bias %c grid [1, 1] : (tensor<1x4x16xf32>, tensor<16xf32>) -> tensor<1x4x16xf32>
    func.return %y : tensor<1x4x16xf32>
  }
}
// CHECK-NEXT: error: {{.*}}: IR does not verify: aimc.accumulate: bias must come from graph.weight
// CHECK-NOT:  // -----
