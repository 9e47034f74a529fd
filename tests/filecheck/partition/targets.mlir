// RUN: aimcc opt %s -p partition | filecheck %s --check-prefix=HYBRID
// RUN: aimcc opt %s -p "partition{target=aimc}" | filecheck %s --check-prefix=AIMC
// RUN: aimcc opt %s -p "partition{target=digital}" | filecheck %s --check-prefix=DIGITAL
// RUN: aimcc opt %s -p "partition{digital=proj}" | filecheck %s --check-prefix=KEEP

// One raised LoRA linear, partitioned for each target.

builtin.module attributes {aimc.arch = {preset = "paper-512"}} {
  func.func @main(%x: tensor<1x16x16xf32> {onnx.name = "x"}) -> (tensor<1x16x16xf32> {onnx.name = "y"}) {
    %val = graph.weight "val_0" : tensor<16x16xf32> = dense<1.000000e-02>
    %proj_base_layer_bias = graph.weight "proj.base_layer.bias" : tensor<16xf32> = dense<1.000000e-02>
    %val_1 = graph.weight "val_2" : tensor<16x4xf32> = dense<1.000000e-02>
    %val_2 = graph.weight "val_3" : tensor<4x16xf32> = dense<1.000000e-02>
    %y = nn.linear %x, %val bias %proj_base_layer_bias lora(%val_1, %val_2) {lora_scale = 2.000000e+00 : f32, layer = "proj"} : (tensor<1x16x16xf32>, tensor<16x16xf32>, tensor<16xf32>, tensor<16x4xf32>, tensor<4x16xf32>) -> tensor<1x16x16xf32>
    func.return %y : tensor<1x16x16xf32>
  }
}

// HYBRID:       builtin.module attributes {aimc.arch = {preset = "paper-512"}, aimc.target = "hybrid"} {
// HYBRID-NOT:   nn.linear
// HYBRID:       %y = aimc.matmul %x, %val {layer = "proj"} : (tensor<1x16x16xf32>, tensor<16x16xf32>) -> tensor<1x16x16xf32>
// HYBRID-NEXT:  %y_1 = "digital.kernel"(%x, %y, %val_1, %val_2) <{kind = "lora", params = {scale = 2.000000e+00 : f32, layer = "proj"}}> : (tensor<1x16x16xf32>, tensor<1x16x16xf32>, tensor<16x4xf32>, tensor<4x16xf32>) -> tensor<1x16x16xf32>
// HYBRID-NEXT:  %y_2 = "digital.kernel"(%y_1, %proj_base_layer_bias) <{kind = "bias_add", params = {layer = "proj"}}> : (tensor<1x16x16xf32>, tensor<16xf32>) -> tensor<1x16x16xf32>
// HYBRID-NEXT:  func.return %y_2

// The adapter merged into a new analog weight: no lora kernel.
// AIMC:         builtin.module attributes {aimc.arch = {preset = "paper-512"}, aimc.target = "aimc"} {
// AIMC:         %y = graph.weight "val_0_lora" : tensor<16x16xf32>
// AIMC-NEXT:    %y_1 = aimc.matmul %x, %y {layer = "proj"} : (tensor<1x16x16xf32>, tensor<16x16xf32>) -> tensor<1x16x16xf32>
// AIMC-NOT:     kind = "lora"
// AIMC-NEXT:    %y_2 = "digital.kernel"(%y_1, %proj_base_layer_bias) <{kind = "bias_add", params = {layer = "proj"}}>
// AIMC-NEXT:    func.return %y_2

// DIGITAL:      builtin.module attributes {aimc.arch = {preset = "paper-512"}, aimc.target = "digital"} {
// DIGITAL-NOT:  aimc.matmul
// DIGITAL:      %y = "digital.kernel"(%x, %val) <{kind = "matmul", params = {layer = "proj"}}> : (tensor<1x16x16xf32>, tensor<16x16xf32>) -> tensor<1x16x16xf32>
// DIGITAL-NEXT: %y_1 = "digital.kernel"(%x, %y, %val_1, %val_2) <{kind = "lora", params = {scale = 2.000000e+00 : f32, layer = "proj"}}>
// DIGITAL-NEXT: %y_2 = "digital.kernel"(%y_1, %proj_base_layer_bias) <{kind = "bias_add", params = {layer = "proj"}}>

// A layer kept digital by name under the hybrid target.
// KEEP:         builtin.module attributes {aimc.arch = {preset = "paper-512"}, aimc.target = "hybrid"} {
// KEEP-NOT:     aimc.matmul
// KEEP:         %y = "digital.kernel"(%x, %val) <{kind = "matmul", params = {layer = "proj"}}>
// KEEP-NEXT:    %y_1 = "digital.kernel"(%x, %y, %val_1, %val_2) <{kind = "lora", params = {scale = 2.000000e+00 : f32, layer = "proj"}}>
