// RUN: aimcc opt %s | filecheck %s
// RUN: aimcc opt %s --inline-weights 0 --save-weights %t.npz -o %t.keys.mlir
// RUN: filecheck %s --check-prefix=KEYS < %t.keys.mlir
// RUN: aimcc opt %t.keys.mlir --weights %t.npz | filecheck %s
// RUN: not aimcc opt %t.keys.mlir 2>&1 | filecheck %s --check-prefix=MISSING
// RUN: sed -e 's/dense<2.500000e-01>/dense<5.000000e-01>/' %s > %t.other.mlir
// RUN: aimcc opt %t.other.mlir --inline-weights 0 --save-weights %t.other.npz -o %t.other.out.mlir
// RUN: not aimcc opt %s --weights %t.other.npz 2>&1 | filecheck %s --check-prefix=CONFLICT

// Weights in text: a weight of at most 1 KiB (--inline-weights) prints its value after its
// type, exactly (lists of up to 100 elements as numbers, longer ones as one hex string), so the
// file is a complete test case; larger ones are named by key, their values in the store beside
// the file (--save-weights, --weights). A NaN or infinity stays in the store too (xDSL would
// print it as a hex integer and read that back as a number).

builtin.module {
  func.func @main() -> (tensor<f32>, tensor<3xf32>, tensor<16x16xf32>, tensor<2xi64>, tensor<2xi1>, tensor<2xf16>, tensor<101xi8>, tensor<300xf32>, tensor<2xf32>) {
    %scale = graph.weight "scale" : tensor<f32> = dense<2.500000e-01>
    %list = graph.weight "list" : tensor<3xf32> = dense<[1.000000e+00, -0.5, 0.1]>
    %splat = graph.weight "splat" : tensor<16x16xf32> = dense<1.000000e-02>
    %shape = graph.weight "shape" : tensor<2xi64> = dense<[4, -1]>
    %mask = graph.weight "mask" : tensor<2xi1> = dense<[true, false]>
    %half = graph.weight "half" : tensor<2xf16> = dense<[1.5, 6.550400e+04]>
    %ramp = graph.weight "ramp" : tensor<101xi8> = dense<"0x000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F202122232425262728292A2B2C2D2E2F303132333435363738393A3B3C3D3E3F404142434445464748494A4B4C4D4E4F505152535455565758595A5B5C5D5E5F6061626364">
    %big = graph.weight "big" : tensor<300xf32> = dense<3.000000e+00>
    %nan = graph.weight "nan" : tensor<2xf32> = dense<"0x0000C07F0000803F">
    func.return %scale, %list, %splat, %shape, %mask, %half, %ramp, %big, %nan : tensor<f32>, tensor<3xf32>, tensor<16x16xf32>, tensor<2xi64>, tensor<2xi1>, tensor<2xf16>, tensor<101xi8>, tensor<300xf32>, tensor<2xf32>
  }
}

// CHECK:      %scale = graph.weight "scale" : tensor<f32> = dense<2.500000e-01>
// CHECK-NEXT: %list = graph.weight "list" : tensor<3xf32> = dense<[1.000000e+00, -5.000000e-01, 1.000000e-01]>
// CHECK-NEXT: %splat = graph.weight "splat" : tensor<16x16xf32> = dense<1.000000e-02>
// CHECK-NEXT: %shape = graph.weight "shape" : tensor<2xi64> = dense<[4, -1]>
// CHECK-NEXT: %mask = graph.weight "mask" : tensor<2xi1> = dense<[true, false]>
// CHECK-NEXT: %half = graph.weight "half" : tensor<2xf16> = dense<[1.500000e+00, 6.550400e+04]>
// CHECK-NEXT: %ramp = graph.weight "ramp" : tensor<101xi8> = dense<"0x000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F202122232425262728292A2B2C2D2E2F303132333435363738393A3B3C3D3E3F404142434445464748494A4B4C4D4E4F505152535455565758595A5B5C5D5E5F6061626364">
// CHECK-NEXT: %big = graph.weight "big" : tensor<300xf32>{{$}}
// CHECK-NEXT: %nan = graph.weight "nan" : tensor<2xf32>{{$}}

// KEYS-NOT:   dense
// KEYS:       %scale = graph.weight "scale" : tensor<f32>{{$}}

// MISSING:    aimcc: error: {{.*}}keys.mlir: weight 'big' is not in the weight store (9 missing): pass --weights FILE.npz (written by 'aimcc opt --save-weights')

// CONFLICT:   aimcc: error: {{.*}}weights.mlir: weight 'scale' is inline and in the weight store, with different values
