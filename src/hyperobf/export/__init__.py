"""PSP-side export: per-user MaskNets to ONNX, ORT format and CoreML (fp32 / fp16 / int8).

formats      the format table (pure data; the device runtime reads SUFFIXES)
registry     resolves a row's exporter / verifier
issue        issue_users: CSPRNG z -> generation -> templates -> staged writes -> manifest
onnx_graph, onnx_export, ort_export, coreml_export   per-spec templates, weights byte-spliced per user
precision    per-precision encoding of generated weights (fp16, per-channel int8)
splice       byte templates;  writer: staged, atomic, read-back writes
verify, coreml_verify, mobile_check   checks against the torch reference
secrets_z    per-user latents from the OS CSPRNG
"""
