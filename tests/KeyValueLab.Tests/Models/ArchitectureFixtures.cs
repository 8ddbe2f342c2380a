using KeyValueLab.Models;

namespace KeyValueLab.Tests.Models;

/// <summary>One random-weight fixture per supported architecture, for the tests that loop over all of them.</summary>
internal static class ArchitectureFixtures
{
    /// <summary>Fixture folder under <c>fixtures/</c> → its <c>model_type</c>.</summary>
    public static readonly IReadOnlyList<(string Fixture, string ModelType)> OnePerArchitecture =
    [
        ("tiny_gpt2", Gpt2.ModelType), ("tiny_gptj", Gptj.ModelType), ("tiny_llama_gqa", Llama.ModelType),
        ("tiny_qwen2", Qwen2.ModelType), ("tiny_mistral", Mistral.ModelType), ("tiny_gemma", Gemma.ModelType),
        ("tiny_gemma2", Gemma2.ModelType), ("tiny_phi3", Phi3.ModelType), ("tiny_gpt_neox", GptNeox.ModelType),
    ];

    /// <summary>Every architecture's fixture, and the second GPT-NeoX one (sequential residual).</summary>
    public static TheoryData<string> All => new([.. OnePerArchitecture.Select(f => f.Fixture), "tiny_gpt_neox_sequential"]);

    /// <summary>The fixtures of the architectures added for issue 15.</summary>
    public static TheoryData<string> New => new(["tiny_qwen2", "tiny_mistral", "tiny_gemma", "tiny_gemma2", "tiny_phi3", "tiny_gpt_neox"]);
}

public class ArchitectureFixturesTests
{
    [Fact]
    public void EverySupportedArchitectureHasAFixture()
    {
        Assert.Equal(Architectures.Supported.Order(StringComparer.Ordinal), ArchitectureFixtures.OnePerArchitecture.Select(f => f.ModelType).Order(StringComparer.Ordinal));
        foreach (var (fixture, type) in ArchitectureFixtures.OnePerArchitecture)
        {
            var config = Architectures.ParseConfig(File.ReadAllText(TestData.Path($"fixtures/{fixture}/config.json")), fixture);
            Assert.Equal(type, config.ModelType);
        }
    }
}
