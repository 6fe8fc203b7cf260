"""PSP-side export: per-user MaskNets to ONNX, ORT format and CoreML (fp32 / fp16 / int8).

registry     runs the rows of the format table (hyperobf.model_formats): exporter, checker, verifiers
issue        issue_users: validated plan -> chunk pipeline -> manifest, all staged, all or nothing
plan, pipeline, manifest, errors   the steps of issue_users and the exporter's errors
onnx_graph, onnx_export, ort_export, coreml_export   per-spec templates, weights byte-spliced per user
precision    per-precision encoding of generated weights (fp16, per-channel int8)
splice       byte templates and their common base;  writer: staged, atomic, read-back writes
verify, coreml_verify, mobile_check   checks against the torch reference
secrets_z    per-user latents from the OS CSPRNG
"""
