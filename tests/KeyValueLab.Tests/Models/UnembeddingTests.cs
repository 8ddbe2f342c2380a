using KeyValueLab.Models;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Models;

public class UnembeddingTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SlicedProjectionEqualsOneLinear(bool withBias)
    {
        using var scope = NewDisposeScope();
        var gen = new TorchSharp.torch.Generator(7);
        var hidden = randn([3, 9, 24], generator: gen);                   // [B, T, d]: 27 rows, enough to slice
        var weight = randn([4 * Unembedding.Slice + 123, 24], generator: gen); // vocab not a multiple of the slice
        var bias = withBias ? randn([weight.shape[0]], generator: gen) : null;
        var expected = nn.functional.linear(hidden, weight, bias);
        using var noGrad = no_grad();
        var sliced = Unembedding.Project(hidden, weight, bias);
        Assert.Equal(expected.shape, sliced.shape);
        Assert.True(sliced.is_contiguous());
        TensorAssert.CloseFp32(expected, sliced, "sliced projection");
    }

    [Fact]
    public void WithGradientsTheSingleLinearKeepsTheGraph()
    {
        using var scope = NewDisposeScope();
        var hidden = randn([2, 20, 8]);
        var weight = randn([5 * Unembedding.Slice, 8]).requires_grad_();
        var logits = Unembedding.Project(hidden, weight);
        logits.sum().backward();
        Assert.NotNull(weight.grad);
    }

    [Theory]
    [InlineData("fixtures/tiny_gpt2")]        // tied to transformer.wte
    [InlineData("fixtures/tiny_llama_gqa")]   // untied lm_head
    [InlineData("fixtures/stories260K_hf")]   // tied to model.embed_tokens
    public void OutputEmbeddingIsWhatLogitsMultipliesBy(string fixture)
    {
        using var loaded = ModelLoader.Load(TestData.Path(fixture));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = randn([3, loaded.Config.HiddenSize]);
        var expected = nn.functional.linear(x, loaded.Model.OutputEmbedding);
        Assert.Equal([loaded.Config.VocabSize, loaded.Config.HiddenSize], loaded.Model.OutputEmbedding.shape);
        TensorAssert.CloseFp32(expected, loaded.Model.Logits(x), fixture);
    }
}
