// RUN: aimcc opt %s --split-input-file --verify-diagnostics | filecheck %s
// RUN: aimcc opt %s --split-input-file --verify-diagnostics --set tile.rows=128 | filecheck %s --check-prefix=SET

// The module attribute aimc.arch: the architecture the IR is compiled for, as a preset and the
// values that differ from it (dotted keys of the arch TOML). The compiler writes it; a module
// without one gets the default preset's (or --arch's); --set changes the recorded one.

builtin.module attributes {aimc.arch = {preset = "hermes-256", tile.count = 32 : i64, tile.mapping.channelwise = false}} {
}
// CHECK:      builtin.module attributes {aimc.arch = {preset = "hermes-256", tile.count = 32 : i64, tile.mapping.channelwise = false}} {
// CHECK:      // -----
// SET:        builtin.module attributes {aimc.arch = {preset = "hermes-256", tile.rows = 128 : i64, tile.count = 32 : i64, tile.mapping.channelwise = false}} {

// -----
builtin.module {
}
// CHECK-NEXT: builtin.module attributes {aimc.arch = {preset = "paper-512"}} {
// CHECK:      // -----

// -----
builtin.module attributes {aimc.arch = {preset = "paper-1024"}} {
}
// CHECK-NEXT: error: {{.*}}arch.mlir: aimc.arch: unknown architecture 'paper-1024': use a preset (hermes-256, paper-512) or a path to a .toml file
// CHECK-NEXT: // -----

// -----
builtin.module attributes {aimc.arch = {preset = "paper-512", tile.colour = 3 : i64}} {
}
// CHECK-NEXT: error: {{.*}}arch.mlir: aimc.arch: no key 'tile.colour' in the architecture
// CHECK-NEXT: // -----

// -----
builtin.module attributes {aimc.arch = {preset = "paper-512", tile.rows = "many"}} {
}
// CHECK-NEXT: error: {{.*}}arch.mlir: aimc.arch: 'tile.rows' has the wrong type ('many')
// CHECK-NEXT: // -----

// -----
builtin.module attributes {aimc.arch = {name = "bare", tile.rows = 8 : i64}} {
}
// CHECK-NEXT: error: {{.*}}arch.mlir: aimc.arch: missing architecture key 'description'
// CHECK-NEXT: // -----

// -----
builtin.module attributes {aimc.arch = "paper-512"} {
}
// CHECK-NEXT: error: {{.*}}arch.mlir: aimc.arch must be a dictionary, got "paper-512"
// CHECK-NOT:  // -----
