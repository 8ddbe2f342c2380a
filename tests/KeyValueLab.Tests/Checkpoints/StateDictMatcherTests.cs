using KeyValueLab.Checkpoints;

namespace KeyValueLab.Tests.Checkpoints;

public class StateDictMatcherTests
{
    private static Dictionary<string, long[]> Expected(ITensorSource source, Func<string, string> rename) =>
        source.Tensors.ToDictionary(t => rename(t.Name), t => t.Shape);

    [Fact]
    public void MatchesStoredNamesWithOrWithoutTheBasePrefix()
    {
        using var buddy = HfCheckpoint.Open(TestData.Path("hf_fixtures/tiny_gpt2_lm_buddy"));
        // The model says transformer.wte.weight; the file says wte.weight.
        var expected = Expected(buddy, n => "transformer." + n);
        expected["lm_head.weight"] = [21, 2];
        var map = StateDictMatcher.Match(expected, buddy, optional: ["lm_head.weight"]);
        Assert.Equal("wte.weight", map["transformer.wte.weight"]);
        Assert.False(map.ContainsKey("lm_head.weight"));
        Assert.Equal(expected.Count - 1, map.Count);

        using var llama = HfCheckpoint.Open(TestData.Path("fixtures/tiny_llama_gqa"));
        var bare = Expected(llama, StateDictMatcher.Canonical);
        var map2 = StateDictMatcher.Match(bare, llama);
        Assert.Equal("model.norm.weight", map2["norm.weight"]);
        Assert.Equal("lm_head.weight", map2["lm_head.weight"]);
    }

    [Fact]
    public void TransposedShapesAreComparedTransposed()
    {
        using var gpt2 = HfCheckpoint.Open(TestData.Path("fixtures/tiny_gpt2"));
        var expected = Expected(gpt2, n => n);
        expected["transformer.h.0.mlp.c_fc.weight"] = [64, 16]; // [out, in] as the model holds it
        var map = StateDictMatcher.Match(expected, gpt2, transposed: ["transformer.h.0.mlp.c_fc.weight"]);
        Assert.Equal(expected.Count, map.Count);
    }

    [Fact]
    public void IgnoresKnownBuffersOnly()
    {
        Assert.True(StateDictMatcher.IsIgnoredBuffer("transformer.h.0.attn.bias"));
        Assert.True(StateDictMatcher.IsIgnoredBuffer("h.3.attn.masked_bias"));
        Assert.True(StateDictMatcher.IsIgnoredBuffer("model.layers.0.self_attn.rotary_emb.inv_freq"));
        Assert.False(StateDictMatcher.IsIgnoredBuffer("transformer.h.0.attn.c_attn.bias"));
        Assert.False(StateDictMatcher.IsIgnoredBuffer("transformer.h.0.mlp.c_proj.bias"));
    }
}
