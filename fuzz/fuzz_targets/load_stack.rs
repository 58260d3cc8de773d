//! Any bytes as a kiln.yaml (with a module beside it) must load or be refused, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut fs = kiln_spec::MemoryFs::new();
    fs.add("stack/kiln.yaml", text);
    fs.add("stack/mod/kiln.yaml", "inputs: { name: { type: string } }\nresources:\n  f: { kind: file, path: x, content: \"${{ inputs.name }}\" }\noutputs: { p: \"${{ resources.f.outputs.path }}\" }\n");
    let _ = kiln_spec::load(&fs, "stack/kiln.yaml".as_ref());
});
