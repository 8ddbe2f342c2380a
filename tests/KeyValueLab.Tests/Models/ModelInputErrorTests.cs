using System.Text.Json.Nodes;
using KeyValueLab.Models;

namespace KeyValueLab.Tests.Models;

/// <summary>Bad configs and checkpoints that do not fit the model give one-line errors naming the file and the problem.</summary>
public class ModelInputErrorTests
{
    /// <summary>A copy of a fixture folder with <paramref name="edit"/> applied to its config.json.</summary>
    private static TempDir CopyWithConfig(string fixture, Action<JsonObject> edit)
    {
        var dir = new TempDir();
        foreach (var file in Directory.GetFiles(TestData.Path("fixtures/" + fixture)))
            File.Copy(file, dir.File(Path.GetFileName(file)));
        var config = JsonNode.Parse(File.ReadAllText(dir.File("config.json")))!.AsObject();
        edit(config);
        File.WriteAllText(dir.File("config.json"), config.ToJsonString());
        return dir;
    }

    private static InputException LoadFails(TempDir dir)
    {
        var e = Assert.Throws<InputException>(() => ModelLoader.Load(dir.Path).Dispose());
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    [Theory]
    [InlineData("tiny_gpt2", "n_layer", 2147483647L)]        // once "Out of memory." and exit 134
    [InlineData("tiny_gpt2", "n_layer", 1000000000L)]        // once memory growing without end
    [InlineData("tiny_gptj", "n_layer", 2147483647L)]
    [InlineData("tiny_llama_gqa", "num_hidden_layers", 100000L)]
    [InlineData("tiny_gptj", "vocab_size", 1000000000L)]
    public void SizesTheTensorsCannotHoldAreRefusedBeforeBuilding(string fixture, string field, long value)
    {
        using var dir = CopyWithConfig(fixture, c => c[field] = value);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var e = LoadFails(dir);
        Assert.Equal(dir.File("config.json"), e.FilePath);
        Assert.Contains("the config does not describe these weights", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"{clock.Elapsed}");
    }

    [Fact]
    public void UnsupportedModelTypeListsTheSupportedOnes()
    {
        using var dir = CopyWithConfig("tiny_llama_gqa", c => c["model_type"] = "bert");
        var e = LoadFails(dir);
        Assert.Equal(dir.File("config.json"), e.FilePath);
        Assert.Contains("unsupported model_type \"bert\"", e.Message);
        Assert.Contains("gpt2, gptj, llama", e.Message);
    }

    [Theory]
    [InlineData("tiny_llama_gqa", "hidden_size")]
    [InlineData("tiny_llama_gqa", "vocab_size")]
    [InlineData("tiny_gpt2", "n_embd")]
    [InlineData("tiny_gptj", "n_layer")]
    [InlineData("tiny_gptj", "model_type")]
    public void MissingFieldIsNamed(string fixture, string field)
    {
        using var dir = CopyWithConfig(fixture, c => c.Remove(field));
        var e = LoadFails(dir);
        Assert.Equal(dir.File("config.json"), e.FilePath);
        Assert.Contains($"missing required field \"{field}\"", e.Message);
    }

    [Theory]
    [InlineData("num_hidden_layers", "\"two\"", "must be an integer")]
    [InlineData("num_key_value_heads", "3", "not a multiple of num_key_value_heads")]
    [InlineData("hidden_act", "\"tanhh\"", "hidden_act")]
    [InlineData("rms_norm_eps", "true", "must be a number")]
    [InlineData("intermediate_size", "0", "must be positive")]
    public void MalformedFieldIsExplained(string field, string json, string problem)
    {
        using var dir = CopyWithConfig("tiny_llama_gqa", c => c[field] = JsonNode.Parse(json));
        var e = LoadFails(dir);
        Assert.Equal(dir.File("config.json"), e.FilePath);
        Assert.Contains(problem, e.Message);
    }

    [Fact]
    public void TensorsThatDoNotFitAreListedByName()
    {
        // Three layers: every layer-2 tensor is missing. Intermediate 40: every MLP weight has the wrong shape.
        using (var dir = CopyWithConfig("tiny_llama_gqa", c => c["num_hidden_layers"] = 3))
        {
            var e = LoadFails(dir);
            Assert.Contains("missing", e.Message);
            Assert.Contains("model.layers.2.mlp.up_proj.weight", e.Message);
        }
        using (var dir = CopyWithConfig("tiny_gpt2", c => c["n_inner"] = 40))
        {
            var e = LoadFails(dir);
            Assert.Contains("wrong shape", e.Message);
            Assert.Contains("transformer.h.0.mlp.c_fc.weight expected [16, 40] found [16, 64]", e.Message);
        }
    }

    [Fact]
    public void ConfigTextThatIsNotJsonIsReported()
    {
        var e = Assert.Throws<InputException>(() => Architectures.ParseConfig("{\"model_type\": ", "my/config.json"));
        Assert.Equal("my/config.json", e.FilePath);
        Assert.Contains("not valid JSON", e.Message);
    }
}
