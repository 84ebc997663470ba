#!/usr/bin/env python3
"""Memory per node for the big MoE families, computed from their shapes.

Prints the figures docs/CLUSTER.md's "Memory per node" tables quote: the
bytes of one expert, of one expert id over its layers, of all experts, of
what the coordinator keeps, its KV cache per position, how many 8 GB and
16 GB boxes hold every expert in memory, and with the disk tier what a token
reads from disk when only part of the experts stay in memory.

Not measured on the real files: the shapes are the models' config.json
values, the bits per weight those of the GGUF block types (MXFP4 17 bytes
per 32 weights, Q4_K 144 per 256, Q6_K 210 per 256, Q8_0 34 per 32, Q2_K 84
per 256), and Q4_K_M's mix as llama.cpp's quantizer makes it (gate and up
Q4_K; down Q6_K on about half the layers, Q4_K on the rest: ~4.84 bits on
average for experts; attention likewise ~4.84; embeddings Q4_K, output Q6_K).
Usage: python3 deploy/memory-table.py
"""

GB = 1e9
GIB = 1 << 30

BPW = {"MXFP4": 17 * 8 / 32, "Q4_K": 144 * 8 / 256, "Q6_K": 210 * 8 / 256, "Q8_0": 34 * 8 / 32,
       "Q2_K": 84 * 8 / 256, "F32": 32.0}
BPW["Q4_K_M"] = (2 * BPW["Q4_K"] + 0.5 * BPW["Q6_K"] + 0.5 * BPW["Q4_K"]) / 3

# Usable for expert weights on a box, after the OS, the node process and its
# buffers (the same allowance as the Mixtral and Qwen3 tables).
BOX_USABLE = {8: 6.2 * GB, 16: 13.8 * GB}


def model(name, *, dim, n_layer, n_dense, n_expert, k, ffn_exp, n_shared, ffn_shared, ffn_dense, vocab, attn_params,
          kv_per_pos_f32, expert_type, rest_type, emb_type, out_type, tiers, expert_bias_per_expert=0):
    moe_layers = n_layer - n_dense
    p_expert = 3 * dim * ffn_exp
    b_expert = p_expert * BPW[expert_type] / 8 + expert_bias_per_expert
    n_exp_total = moe_layers * n_expert
    experts = n_exp_total * b_expert
    per_id = moe_layers * b_expert
    rest_params = n_layer * attn_params + moe_layers * n_shared * 3 * dim * ffn_shared + n_dense * 3 * dim * ffn_dense
    router = moe_layers * n_expert * dim * 4
    coord = rest_params * BPW[rest_type] / 8 + vocab * dim * (BPW[emb_type] + BPW[out_type]) / 8 + router
    print(f"## {name}: experts {expert_type}, the rest {rest_type}")
    print(f"  expert: {p_expert / 1e6:.2f} M params, {b_expert / 1e6:.2f} MB; "
          f"an expert id over {moe_layers} layers: {per_id / 1e6:.0f} MB; all {n_exp_total} experts: {experts / GB:.1f} GB")
    print(f"  coordinator: {coord / GB:.1f} GB (attention {n_layer * attn_params / 1e9:.2f} B params, "
          f"shared/dense FFN, embeddings, head, routers F32 {router / GB:.2f} GB)")
    print(f"  KV cache per position: {kv_per_pos_f32 / 1024:.0f} KiB f32, {kv_per_pos_f32 / 2048:.0f} KiB f16; "
          f"at 4096: {4096 * kv_per_pos_f32 / GIB:.2f} GiB f32")
    token_bytes = k * moe_layers * b_expert
    for box in (8, 16):
        ids = int(BOX_USABLE[box] // per_id)
        boxes = -(-n_expert // ids) if ids else None
        packed = -(-experts // BOX_USABLE[box])  # (layer, expert) pairs packed by bytes
        print(f"  {box} GB boxes, all in memory: {ids} expert ids each ({ids * per_id / GB:.1f} GB) -> {boxes} boxes; "
              f"packed by (layer, expert) pairs: {packed:.0f} boxes")
    print(f"  a token uses {k} x {moe_layers} = {k * moe_layers} experts = {token_bytes / GB:.2f} GB of expert weights")
    for box, n in tiers:
        res = min(1.0, n * BOX_USABLE[box] / experts)
        miss = 1 - res  # uniform routing: the share of uses that miss
        per_box = miss * token_bytes / n
        print(f"  disk tier, {n} x {box} GB: {100 * res:.0f}% resident; uniform routing reads "
              f"{miss * token_bytes / GB:.2f} GB/token, {per_box / 1e6:.0f} MB per box: "
              f"{per_box / 400e6:.2f} s at 400 MB/s (USB SSD), {per_box / 2000e6:.2f} s at 2 GB/s (NVMe)")
    print()


# GPT-OSS-120B: hidden 2880, 36 layers, 128 experts (4 used) of 2880, heads
# 64 x 64, 8 KV heads, vocabulary 201088; experts MXFP4 with F32 biases
# (gate, up, down: 3 x 2880 floats), the rest Q8_0 in the MXFP4 GGUFs.
model("GPT-OSS-120B (MXFP4)", dim=2880, n_layer=36, n_dense=0, n_expert=128, k=4, ffn_exp=2880, n_shared=0,
      ffn_shared=0, ffn_dense=0, vocab=201088,
      attn_params=2880 * (64 * 64 + 2 * 8 * 64) + 64 * 64 * 2880,
      kv_per_pos_f32=36 * 2 * 8 * 64 * 4, expert_type="MXFP4", rest_type="Q8_0", emb_type="Q8_0", out_type="Q8_0",
      tiers=((8, 4), (16, 2), (16, 4)), expert_bias_per_expert=3 * 2880 * 4)

# GLM-4.5-Air: hidden 4096, 46 layers (the first dense, FFN 10944), 128
# experts (8 used) of 1408, one shared expert of 1408, heads 96 x 128, 8 KV
# heads, vocabulary 151552 (the next-token-prediction layer is not counted:
# it is in the file but never read).
model("GLM-4.5-Air (Q4_K_M)", dim=4096, n_layer=46, n_dense=1, n_expert=128, k=8, ffn_exp=1408, n_shared=1,
      ffn_shared=1408, ffn_dense=10944, vocab=151552,
      attn_params=4096 * (96 * 128 + 2 * 8 * 128) + 96 * 128 * 4096,
      kv_per_pos_f32=46 * 2 * 8 * 128 * 4, expert_type="Q4_K_M", rest_type="Q4_K_M", emb_type="Q4_K", out_type="Q6_K",
      tiers=((8, 4), (16, 2), (16, 4)))

# DeepSeek-V3/R1: hidden 7168, 61 layers (3 dense, FFN 18432), 256 experts
# (8 used) of 2048, one shared expert of 2048, vocabulary 129280; latent
# attention: q through rank 1536 to 128 heads x (128 + 64), kv through rank
# 512 (+64 rotary) to 128 x (128 + 128), output 128 x 128 -> 7168. The KV
# cache keeps the latent (512) and the rotary key (64) per layer.
ds_attn = 7168 * 1536 + 1536 * 128 * 192 + 7168 * (512 + 64) + 512 * 128 * 256 + 128 * 128 * 7168
for t in ("Q4_K_M", "Q2_K"):
    model(f"DeepSeek-V3 ({t} experts)", dim=7168, n_layer=61, n_dense=3, n_expert=256, k=8, ffn_exp=2048, n_shared=1,
          ffn_shared=2048, ffn_dense=18432, vocab=129280, attn_params=ds_attn, kv_per_pos_f32=61 * (512 + 64) * 4,
          expert_type=t, rest_type="Q4_K_M", emb_type="Q4_K", out_type="Q6_K", tiers=((16, 4), (16, 8), (16, 16)))
