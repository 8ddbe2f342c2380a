using KeyValueLab.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Models;

/// <summary>Config options the fixtures do not exercise build, run, and keep cache and padding exact (random weights).</summary>
public class ConfigVariantTests
{
    public static TheoryData<string, int> Variants => new()
    {
        { """{"model_type": "gpt2", "vocab_size": 97, "n_positions": 32, "n_embd": 24, "n_layer": 2, "n_head": 3, "tie_word_embeddings": false, "scale_attn_by_inverse_layer_idx": true, "activation_function": "gelu"}""", 4 },
        { """{"model_type": "gptj", "vocab_size": 97, "n_embd": 24, "n_layer": 2, "n_head": 2, "rotary_dim": null, "n_inner": null, "activation_function": "relu"}""", 4 },
        { """{"model_type": "llama", "vocab_size": 97, "hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 8, "attention_bias": true, "mlp_bias": true, "rope_scaling": {"rope_type": "linear", "factor": 2.0}, "rope_theta": 500000.0, "tie_word_embeddings": true}""", 6 },
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void RandomModelIsConsistent(string config, int expectedParametersPerLayerFfn)
    {
        using var loaded = ModelLoader.Create(config, seed: 3);
        var model = loaded.Model;
        Assert.Equal(expectedParametersPerLayerFfn, new KeyValueLab.Memory.FfnMemory(model).ParameterNames([0], biases: true).Count);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = tensor(new long[] { 1, 50, 96, 7, 7, 30, 2, 64, 11, 0 }, [2, 5]);
        var full = model.Forward(ids);
        Assert.True(full.isfinite().all().item<bool>());

        using var cache = model.NewCache();
        var stepwise = cat([model.Forward(ids.narrow(1, 0, 2), cache: cache), model.Forward(ids.narrow(1, 2, 1), cache: cache), model.Forward(ids.narrow(1, 3, 2), cache: cache)], 1);
        TensorAssert.CloseFp32(full, stepwise, "cache");

        // Row 1 alone equals row 1 right-padded by two tokens.
        var mask = tensor(new long[] { 1, 1, 1, 1, 1, 1, 1, 1, 0, 0 }, [2, 5]);
        var padded = model.Forward(ids, mask);
        TensorAssert.CloseFp32(model.Forward(ids.narrow(0, 1, 1).narrow(1, 0, 3)), padded.narrow(0, 1, 1).narrow(1, 0, 3), "padding");
    }
}
