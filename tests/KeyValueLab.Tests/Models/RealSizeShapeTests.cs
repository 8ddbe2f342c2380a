using KeyValueLab.Checkpoints;
using KeyValueLab.Memory;
using KeyValueLab.Models;
using TorchSharp;

namespace KeyValueLab.Tests.Models;

/// <summary>
/// Real model sizes built on the meta device (no storage): the tensors Save would write have exactly the
/// names and shapes of the published checkpoints, written out here from the published configs, and a
/// checkpoint named as the original uploads are (no base prefix, extra buffers) matches the model.
/// </summary>
public class RealSizeShapeTests
{
    private static ModelConfig Config(string json) => Architectures.ParseConfig(json, "config.json");

    private const string Gpt2XlConfig = """
        {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50257, "n_positions": 1024, "n_ctx": 1024,
         "n_embd": 1600, "n_layer": 48, "n_head": 25, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05,
         "bos_token_id": 50256, "eos_token_id": 50256}
        """;

    private const string GptJ6BConfig = """
        {"model_type": "gptj", "architectures": ["GPTJForCausalLM"], "vocab_size": 50400, "n_positions": 2048, "n_embd": 4096,
         "n_layer": 28, "n_head": 16, "rotary_dim": 64, "n_inner": null, "activation_function": "gelu_new",
         "layer_norm_epsilon": 1e-05, "tie_word_embeddings": false, "bos_token_id": 50256, "eos_token_id": 50256}
        """;

    private const string Llama2_7BConfig = """
        {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 32000, "hidden_size": 4096,
         "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
         "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "hidden_act": "silu", "tie_word_embeddings": false,
         "bos_token_id": 1, "eos_token_id": 2, "pretraining_tp": 1, "rope_scaling": null, "torch_dtype": "float16"}
        """;

    // The config.json files of the Hugging Face uploads Qwen/Qwen2.5-7B, mistralai/Mistral-7B-v0.1,
    // google/gemma-2-9b, microsoft/Phi-3-mini-4k-instruct and EleutherAI/pythia-6.9b.
    private const string Qwen25_7BConfig = """
        {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643, "eos_token_id": 151643,
         "hidden_act": "silu", "hidden_size": 3584, "initializer_range": 0.02, "intermediate_size": 18944,
         "max_position_embeddings": 131072, "max_window_layers": 28, "model_type": "qwen2", "num_attention_heads": 28,
         "num_hidden_layers": 28, "num_key_value_heads": 4, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
         "sliding_window": 131072, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.40.1",
         "use_cache": true, "use_sliding_window": false, "vocab_size": 152064}
        """;

    private const string Mistral7BConfig = """
        {"architectures": ["MistralForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096,
         "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
         "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
         "sliding_window": 4096, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.34.0.dev0",
         "use_cache": true, "vocab_size": 32000}
        """;

    private const string Gemma2_9BConfig = """
        {"architectures": ["Gemma2ForCausalLM"], "attention_bias": false, "attention_dropout": 0.0, "attn_logit_softcapping": 50.0,
         "bos_token_id": 2, "cache_implementation": "hybrid", "eos_token_id": 1, "final_logit_softcapping": 30.0, "head_dim": 256,
         "hidden_act": "gelu_pytorch_tanh", "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 3584, "initializer_range": 0.02,
         "intermediate_size": 14336, "max_position_embeddings": 8192, "model_type": "gemma2", "num_attention_heads": 16,
         "num_hidden_layers": 42, "num_key_value_heads": 8, "pad_token_id": 0, "query_pre_attn_scalar": 256, "rms_norm_eps": 1e-06,
         "rope_theta": 10000.0, "sliding_window": 4096, "torch_dtype": "float32", "transformers_version": "4.42.0.dev0",
         "use_cache": true, "vocab_size": 256000}
        """;

    private const string Phi3Mini4kConfig = """
        {"_name_or_path": "Phi-3-mini-4k-instruct", "architectures": ["Phi3ForCausalLM"], "attention_dropout": 0.0,
         "auto_map": {"AutoConfig": "configuration_phi3.Phi3Config", "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
         "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu", "hidden_size": 3072,
         "initializer_range": 0.02, "intermediate_size": 8192, "max_position_embeddings": 4096, "model_type": "phi3",
         "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32, "original_max_position_embeddings": 4096,
         "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 10000.0,
         "sliding_window": 2047, "tie_word_embeddings": false, "torch_dtype": "bfloat16", "transformers_version": "4.40.2",
         "use_cache": true, "attention_bias": false, "vocab_size": 32064}
        """;

    private const string Pythia6_9BConfig = """
        {"architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu", "hidden_size": 4096,
         "initializer_range": 0.02, "intermediate_size": 16384, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048,
         "model_type": "gpt_neox", "num_attention_heads": 32, "num_hidden_layers": 32, "rotary_emb_base": 10000, "rotary_pct": 0.25,
         "tie_word_embeddings": false, "torch_dtype": "float16", "transformers_version": "4.24.0", "use_cache": true,
         "use_parallel_residual": true, "vocab_size": 50432}
        """;

    /// <summary>GPT-2 as GPT2LMHeadModel.save_pretrained writes it: Conv1D weights [in, out], head tied (not stored).</summary>
    private static List<(string, long[])> Gpt2Expected(long vocab, long positions, long c, int layers)
    {
        var list = new List<(string, long[])> { ("transformer.wte.weight", [vocab, c]), ("transformer.wpe.weight", [positions, c]) };
        for (int i = 0; i < layers; i++)
        {
            string p = $"transformer.h.{i}.";
            list.AddRange([
                (p + "ln_1.weight", [c]), (p + "ln_1.bias", [c]),
                (p + "attn.c_attn.weight", [c, 3 * c]), (p + "attn.c_attn.bias", [3 * c]),
                (p + "attn.c_proj.weight", [c, c]), (p + "attn.c_proj.bias", [c]),
                (p + "ln_2.weight", [c]), (p + "ln_2.bias", [c]),
                (p + "mlp.c_fc.weight", [c, 4 * c]), (p + "mlp.c_fc.bias", [4 * c]),
                (p + "mlp.c_proj.weight", [4 * c, c]), (p + "mlp.c_proj.bias", [c]),
            ]);
        }
        list.AddRange([("transformer.ln_f.weight", [c]), ("transformer.ln_f.bias", [c])]);
        return list;
    }

    private static List<(string, long[])> GptjExpected(long vocab, long c, long inner, int layers)
    {
        var list = new List<(string, long[])> { ("transformer.wte.weight", [vocab, c]) };
        for (int i = 0; i < layers; i++)
        {
            string p = $"transformer.h.{i}.";
            list.AddRange([
                (p + "ln_1.weight", [c]), (p + "ln_1.bias", [c]),
                (p + "attn.q_proj.weight", [c, c]), (p + "attn.k_proj.weight", [c, c]),
                (p + "attn.v_proj.weight", [c, c]), (p + "attn.out_proj.weight", [c, c]),
                (p + "mlp.fc_in.weight", [inner, c]), (p + "mlp.fc_in.bias", [inner]),
                (p + "mlp.fc_out.weight", [c, inner]), (p + "mlp.fc_out.bias", [c]),
            ]);
        }
        list.AddRange([("transformer.ln_f.weight", [c]), ("transformer.ln_f.bias", [c]), ("lm_head.weight", [vocab, c]), ("lm_head.bias", [vocab])]);
        return list;
    }

    private static List<(string, long[])> LlamaExpected(long vocab, long c, long inner, long kv, int layers)
    {
        var list = new List<(string, long[])> { ("model.embed_tokens.weight", [vocab, c]) };
        for (int i = 0; i < layers; i++)
        {
            string p = $"model.layers.{i}.";
            list.AddRange([
                (p + "self_attn.q_proj.weight", [c, c]), (p + "self_attn.k_proj.weight", [kv, c]),
                (p + "self_attn.v_proj.weight", [kv, c]), (p + "self_attn.o_proj.weight", [c, c]),
                (p + "mlp.gate_proj.weight", [inner, c]), (p + "mlp.up_proj.weight", [inner, c]), (p + "mlp.down_proj.weight", [c, inner]),
                (p + "input_layernorm.weight", [c]), (p + "post_attention_layernorm.weight", [c]),
            ]);
        }
        list.AddRange([("model.norm.weight", [c]), ("lm_head.weight", [vocab, c])]);
        return list;
    }

    /// <summary>
    /// Llama-family checkpoints (Qwen2, Mistral, Gemma 2): <paramref name="q"/> and <paramref name="kv"/> are the rows of
    /// q_proj and k_proj/v_proj; Qwen2 has q/k/v biases, Gemma 2 four norms per layer and a tied head.
    /// </summary>
    private static List<(string, long[])> LlamaFamilyExpected(long vocab, long c, long inner, long q, long kv, int layers, bool qkvBias, bool gemma2)
    {
        var list = new List<(string, long[])> { ("model.embed_tokens.weight", [vocab, c]) };
        for (int i = 0; i < layers; i++)
        {
            string p = $"model.layers.{i}.";
            list.AddRange([
                (p + "self_attn.q_proj.weight", [q, c]), (p + "self_attn.k_proj.weight", [kv, c]),
                (p + "self_attn.v_proj.weight", [kv, c]), (p + "self_attn.o_proj.weight", [c, q]),
                (p + "mlp.gate_proj.weight", [inner, c]), (p + "mlp.up_proj.weight", [inner, c]), (p + "mlp.down_proj.weight", [c, inner]),
                (p + "input_layernorm.weight", [c]), (p + "post_attention_layernorm.weight", [c]),
            ]);
            if (qkvBias) list.AddRange([(p + "self_attn.q_proj.bias", [q]), (p + "self_attn.k_proj.bias", [kv]), (p + "self_attn.v_proj.bias", [kv])]);
            if (gemma2) list.AddRange([(p + "pre_feedforward_layernorm.weight", [c]), (p + "post_feedforward_layernorm.weight", [c])]);
        }
        list.Add(("model.norm.weight", [c]));
        if (!gemma2) list.Add(("lm_head.weight", [vocab, c]));
        return list;
    }

    private static List<(string, long[])> Phi3Expected(long vocab, long c, long inner, long kv, int layers)
    {
        var list = new List<(string, long[])> { ("model.embed_tokens.weight", [vocab, c]) };
        for (int i = 0; i < layers; i++)
        {
            string p = $"model.layers.{i}.";
            list.AddRange([
                (p + "self_attn.qkv_proj.weight", [c + 2 * kv, c]), (p + "self_attn.o_proj.weight", [c, c]),
                (p + "mlp.gate_up_proj.weight", [2 * inner, c]), (p + "mlp.down_proj.weight", [c, inner]),
                (p + "input_layernorm.weight", [c]), (p + "post_attention_layernorm.weight", [c]),
            ]);
        }
        list.AddRange([("model.norm.weight", [c]), ("lm_head.weight", [vocab, c])]);
        return list;
    }

    private static List<(string, long[])> GptNeoxExpected(long vocab, long c, long inner, int layers)
    {
        var list = new List<(string, long[])> { ("gpt_neox.embed_in.weight", [vocab, c]) };
        for (int i = 0; i < layers; i++)
        {
            string p = $"gpt_neox.layers.{i}.";
            list.AddRange([
                (p + "input_layernorm.weight", [c]), (p + "input_layernorm.bias", [c]),
                (p + "post_attention_layernorm.weight", [c]), (p + "post_attention_layernorm.bias", [c]),
                (p + "attention.query_key_value.weight", [3 * c, c]), (p + "attention.query_key_value.bias", [3 * c]),
                (p + "attention.dense.weight", [c, c]), (p + "attention.dense.bias", [c]),
                (p + "mlp.dense_h_to_4h.weight", [inner, c]), (p + "mlp.dense_h_to_4h.bias", [inner]),
                (p + "mlp.dense_4h_to_h.weight", [c, inner]), (p + "mlp.dense_4h_to_h.bias", [c]),
            ]);
        }
        list.AddRange([("gpt_neox.final_layer_norm.weight", [c]), ("gpt_neox.final_layer_norm.bias", [c]), ("embed_out.weight", [vocab, c])]);
        return list;
    }

    public static TheoryData<string, string, long> Published => new()
    {
        // name, config JSON (gpt2: the real openai-community/gpt2 config.json), published parameter count
        { "gpt2", File.ReadAllText(TestData.Path("gpt2_tokenizer/config.json")), 124_439_808 },
        { "gpt2-xl", Gpt2XlConfig, 1_557_611_200 },
        { "gpt-j-6b", GptJ6BConfig, 6_050_882_784 },
        { "llama-2-7b", Llama2_7BConfig, 6_738_415_616 },
        // The model cards' and papers' exact counts: Qwen2.5-7B 7.61B, Mistral 7B 7.24B, Gemma 2 9B 9.24B,
        // Phi-3-mini 3.82B, Pythia-6.9B 6,857,302,016 (Biderman et al. 2023, Table 1).
        { "qwen2.5-7b", Qwen25_7BConfig, 7_615_616_512 },
        { "mistral-7b-v0.1", Mistral7BConfig, 7_241_732_096 },
        { "gemma-2-9b", Gemma2_9BConfig, 9_241_705_984 },
        { "phi-3-mini-4k", Phi3Mini4kConfig, 3_821_079_552 },
        { "pythia-6.9b", Pythia6_9BConfig, 6_857_302_016 },
    };

    private static List<(string, long[])> Expected(string name) => name switch
    {
        "gpt2" => Gpt2Expected(50257, 1024, 768, 12),
        "gpt2-xl" => Gpt2Expected(50257, 1024, 1600, 48),
        "gpt-j-6b" => GptjExpected(50400, 4096, 16384, 28),
        "llama-2-7b" => LlamaExpected(32000, 4096, 11008, 4096, 32),
        "qwen2.5-7b" => LlamaFamilyExpected(152064, 3584, 18944, 3584, 512, 28, qkvBias: true, gemma2: false),
        "mistral-7b-v0.1" => LlamaFamilyExpected(32000, 4096, 14336, 4096, 1024, 32, qkvBias: false, gemma2: false),
        "gemma-2-9b" => LlamaFamilyExpected(256000, 3584, 14336, 16 * 256, 8 * 256, 42, qkvBias: false, gemma2: true),
        "phi-3-mini-4k" => Phi3Expected(32064, 3072, 8192, 3072, 32),
        "pythia-6.9b" => GptNeoxExpected(50432, 4096, 16384, 32),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Published))]
    public void SavedNamesAndShapesEqualThePublishedCheckpoint(string name, string configJson, long parameterCount)
    {
        using var model = ModelLoader.CreateOnMeta(Config(configJson));
        Assert.All(model.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
        var actual = ModelLoader.CheckpointTensors(model);
        var expected = Expected(name);
        Assert.Equal(expected.Count, actual.Count);
        var byName = actual.ToDictionary(t => t.Name);
        foreach (var (tensorName, shape) in expected)
        {
            Assert.True(byName.TryGetValue(tensorName, out var t), $"{name}: no tensor {tensorName}");
            Assert.True(shape.SequenceEqual(t!.Shape), $"{name}: {tensorName} is [{string.Join(", ", t.Shape)}], published [{string.Join(", ", shape)}]");
            Assert.Equal(SafetensorsDType.F32, t.DType);
        }
        Assert.Equal(parameterCount, model.parameters().Sum(p => p.numel()));
    }

    [Theory]
    [MemberData(nameof(Published))]
    public void FfnMemoriesHaveThePaperOrientation(string name, string configJson, long parameterCount)
    {
        _ = parameterCount;
        using var model = ModelLoader.CreateOnMeta(Config(configJson));
        var memory = new FfnMemory(model);
        long d = model.Config.HiddenSize, m = model.Config.IntermediateSize;
        foreach (int layer in new[] { 0, memory.Layers - 1 })
        {
            foreach (var kind in memory.KeyKinds)
                Assert.Equal(new[] { m, d }, memory.Keys(layer, kind).shape);
            Assert.Equal(new[] { d, m }, memory.Values(layer).shape);
        }
        // gate, up, down; or one key matrix and the values; Phi-3's gate and up are one stored gate_up_proj.
        int expected = name.StartsWith("gpt", StringComparison.Ordinal) || name.StartsWith("pythia", StringComparison.Ordinal) || name.StartsWith("phi-3", StringComparison.Ordinal) ? 2 : 3;
        Assert.Equal(expected, memory.ParameterNames([0]).Count);
        Assert.Equal(name.StartsWith("gpt", StringComparison.Ordinal) || name.StartsWith("pythia", StringComparison.Ordinal) ? 1 : 2, memory.KeyKinds.Count);
    }

    /// <summary>The original uploads name tensors differently (gpt2: no "transformer." prefix; buffers such as attn.bias); they still match.</summary>
    [Theory]
    [MemberData(nameof(Published))]
    public void OriginalUploadNamingMatchesTheModel(string name, string configJson, long parameterCount)
    {
        _ = parameterCount;
        using var model = ModelLoader.CreateOnMeta(Config(configJson));
        var stored = Expected(name).Select(e => new TensorInfo(e.Item1, "F16", e.Item2)).ToList();
        if (name.StartsWith("gpt2", StringComparison.Ordinal))
        {
            stored = stored.Select(t => t with { Name = t.Name.Replace("transformer.", "") }).ToList();
            stored.AddRange(Enumerable.Range(0, model.Config.NumLayers).Select(i => new TensorInfo($"h.{i}.attn.bias", "F32", [1, 1, 1024, 1024])));
        }
        else if (name.StartsWith("gpt-j", StringComparison.Ordinal))
            stored.AddRange(Enumerable.Range(0, model.Config.NumLayers).SelectMany(i => new[]
                { new TensorInfo($"transformer.h.{i}.attn.bias", "BOOL", [1, 1, 2048, 2048]), new TensorInfo($"transformer.h.{i}.attn.masked_bias", "F32", []) }));
        else if (name.StartsWith("pythia", StringComparison.Ordinal))
            stored.AddRange(Enumerable.Range(0, model.Config.NumLayers).SelectMany(i => new[]
            {
                new TensorInfo($"gpt_neox.layers.{i}.attention.bias", "BOOL", [1, 1, 2048, 2048]),
                new TensorInfo($"gpt_neox.layers.{i}.attention.masked_bias", "F32", []),
                new TensorInfo($"gpt_neox.layers.{i}.attention.rotary_emb.inv_freq", "F32", [16]),
            }));
        else
            stored.AddRange(Enumerable.Range(0, model.Config.NumLayers).Select(i => new TensorInfo($"model.layers.{i}.self_attn.rotary_emb.inv_freq", "F32", [64])));

        using var source = new ShapesOnly(stored);
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);
        var layout = ModelLoader.DefaultLayout(model);
        var match = StateDictMatcher.Match(parameters, source, transposed: parameters.Keys.Where(n => layout[n].Transposed));
        Assert.Equal(parameters.Count, match.Count);
    }

    private sealed class ShapesOnly(IReadOnlyList<TensorInfo> tensors) : ITensorSource
    {
        public string SourcePath => "published";
        public IReadOnlyList<TensorInfo> Tensors => tensors;
        public torch.Tensor ReadFloat32(string name) => throw new NotSupportedException();
        public void Dispose() { }
    }
}
