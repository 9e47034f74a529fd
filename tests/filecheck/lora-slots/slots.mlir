// RUN: aimcc opt %s -p "lora-slots{rank=2}" | filecheck %s --check-prefix=SLOT
// RUN: aimcc opt %s -p "lora-slots{digital=proj}" | filecheck %s --check-prefix=DIGITAL
// RUN: aimcc opt %s -p lora-slots | filecheck %s --check-prefix=NONE
// RUN: not aimcc opt %s -p "lora-slots{rank=2 targets=other}" 2>&1 | filecheck %s --check-prefix=NOMATCH

// A plain linear gets an empty rank-2 adapter slot (new A/B weights, scale 1), or the digital
// mark; without options the pass changes nothing; a target pattern that names no layer is refused.

builtin.module {
  func.func @main(%x: tensor<1x16x16xf32> {onnx.name = "x"}) -> (tensor<1x16x16xf32> {onnx.name = "y"}) {
    %val = graph.weight "val_0" : tensor<16x16xf32> = dense<1.000000e-02>
    %proj_base_layer_bias = graph.weight "proj.base_layer.bias" : tensor<16xf32> = dense<1.000000e-02>
    %y = nn.linear %x, %val bias %proj_base_layer_bias {layer = "proj"} : (tensor<1x16x16xf32>, tensor<16x16xf32>, tensor<16xf32>) -> tensor<1x16x16xf32>
    func.return %y : tensor<1x16x16xf32>
  }
}

// SLOT:         %y = graph.weight "proj.lora_A" : tensor<16x2xf32>
// SLOT-NEXT:    %y_1 = graph.weight "proj.lora_B" : tensor<2x16xf32>
// SLOT-NEXT:    %y_2 = nn.linear %x, %val bias %proj_base_layer_bias lora(%y, %y_1) {lora_scale = 1.000000e+00 : f32, layer = "proj"} : (tensor<1x16x16xf32>, tensor<16x16xf32>, tensor<16xf32>, tensor<16x2xf32>, tensor<2x16xf32>) -> tensor<1x16x16xf32>
// SLOT-NEXT:    func.return %y_2

// DIGITAL-NOT:  lora_A
// DIGITAL:      %y = nn.linear %x, %val bias %proj_base_layer_bias {layer = "proj", digital}

// NONE-NOT:     lora_A
// NONE:         %y = nn.linear %x, %val bias %proj_base_layer_bias {layer = "proj"}

// NOMATCH:      aimcc: error: --lora-targets: 'other' matches no linear layer (layers: proj)
