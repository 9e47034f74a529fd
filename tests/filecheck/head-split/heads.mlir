// RUN: aimcc opt %s -p head-split | filecheck %s --check-prefix=HEADS
// RUN: aimcc opt %s -p "head-split{max_groups=2}" | filecheck %s --check-prefix=TWO
// RUN: aimcc opt %s -p "head-split{max_groups=3}" | filecheck %s --check-prefix=TWO
// RUN: aimcc opt %s -p "head-split{max_groups=1}" | filecheck %s --check-prefix=ONE

// A placed 4-head attention on cluster 0 (q, k, v are arguments: no projection tiles, so the
// other groups go to free clusters): one group per head by default, at most max_groups, and
// a group count that divides the heads (3 -> 2).

builtin.module attributes {aimc.arch = {preset = "paper-512"}, aimc.target = "hybrid", aimc.chips = "automatic"} {
  func.func @main(%q: tensor<1x4x16x8xf32>, %kt: tensor<1x4x8x16xf32>, %v: tensor<1x4x16x8xf32>) -> tensor<1x4x16x8xf32> {
    %a = "digital.kernel"(%q, %kt, %v) <{kind = "attention", params = {scale = 0.353553385 : f32}, cluster = 0 : i64}> : (tensor<1x4x16x8xf32>, tensor<1x4x8x16xf32>, tensor<1x4x16x8xf32>) -> tensor<1x4x16x8xf32>
    func.return %a : tensor<1x4x16x8xf32>
  }
}

// HEADS:      %a = "digital.kernel"(%q, %kt, %v) <{kind = "attention", params = {scale = 0.353553385 : f32, head_clusters = array<i64: 0, 1, 2, 3>}, cluster = 0 : i64}> : (tensor<1x4x16x8xf32>, tensor<1x4x8x16xf32>, tensor<1x4x16x8xf32>) -> tensor<1x4x16x8xf32>

// TWO:        %a = "digital.kernel"(%q, %kt, %v) <{kind = "attention", params = {scale = 0.353553385 : f32, head_clusters = array<i64: 0, 1>}, cluster = 0 : i64}>

// ONE-NOT:    head_clusters
// ONE:        %a = "digital.kernel"(%q, %kt, %v) <{kind = "attention", params = {scale = 0.353553385 : f32}, cluster = 0 : i64}>
// ONE-NOT:    head_clusters
