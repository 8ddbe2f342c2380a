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

    public static TheoryData<string, string, long> Published => new()
    {
        // name, config JSON (gpt2: the real openai-community/gpt2 config.json), published parameter count
        { "gpt2", File.ReadAllText(TestData.Path("gpt2_tokenizer/config.json")), 124_439_808 },
        { "gpt2-xl", Gpt2XlConfig, 1_557_611_200 },
        { "gpt-j-6b", GptJ6BConfig, 6_050_882_784 },
        { "llama-2-7b", Llama2_7BConfig, 6_738_415_616 },
    };

    private static List<(string, long[])> Expected(string name) => name switch
    {
        "gpt2" => Gpt2Expected(50257, 1024, 768, 12),
        "gpt2-xl" => Gpt2Expected(50257, 1024, 1600, 48),
        "gpt-j-6b" => GptjExpected(50400, 4096, 16384, 28),
        "llama-2-7b" => LlamaExpected(32000, 4096, 11008, 4096, 32),
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
        Assert.Equal(name.StartsWith("llama", StringComparison.Ordinal) ? 3 : 2, memory.ParameterNames([0]).Count);
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
