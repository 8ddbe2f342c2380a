using System.Text.Json.Nodes;
using KeyValueLab.Cli;
using KeyValueLab.Models;
using KeyValueLab.Tuning;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Tuning;

public class TuneCommandTests(ITestOutputHelper output)
{
    private static (int Code, string Out, string Err) Kvlab(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int code = Program.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void TuneWritesAPeftAdapterAndMetricsAndTheMergedAdapterGivesTheSameLogits()
    {
        using var dir = new TempDir();
        string model = TestData.Path("fixtures/tiny_gpt2"), tok = TestData.Path("gpt2_tokenizer");
        var (code, stdout, stderr) = Kvlab("tune", "-m", model, "-z", tok, "--task", "copa=" + TestData.Path("superglue/COPA"),
            "--task", "cb=" + TestData.Path("superglue/CB"), "--targets", "c_attn,keys", "--4bit", "--epochs", "1", "--batch", "4", "--grad-accum", "1",
            "--max-train", "8", "--max-eval", "3", "--max-steps", "2", "--lr", "0.01", "--label-likelihood", "--out", dir.Path);
        output.WriteLine(stdout + stderr);
        Assert.True(code == 0, stderr);
        Assert.Contains("trainable params: ", stdout);
        Assert.Contains("copa", stdout);
        Assert.Contains("4-bit base:", stderr);
        var metrics = JsonNode.Parse(File.ReadAllText(Path.Combine(dir.Path, "metrics.json")))!.AsObject();
        Assert.Equal(2, metrics["tasks"]!.AsArray().Count);
        Assert.True((long)metrics["base_linear_bytes_stored"]! <= 0.16 * (long)metrics["base_linear_bytes_fp32"]!);
        Assert.True(File.Exists(Path.Combine(dir.Path, "checkpoints", "checkpoint-epoch-1", "adapter_model.safetensors")));

        // The trained adapter on an fp32 base: merged logits equal unmerged ones.
        using var loaded = ModelLoader.Load(model);
        using var lora = LoraModel.Load(loaded.Model, dir.Path);
        Assert.Contains(lora.Layers, l => l.B.abs().max().item<float>() > 0);
        using var ids = tensor(new long[] { 464, 3139, 286, 4881, 318, 6342, 13 }, [1, 7]);
        using var noGrad = no_grad();
        using var unmerged = loaded.Model.Forward(ids);
        lora.Merge();
        using var merged = loaded.Model.Forward(ids);
        double diff = (merged - unmerged).abs().max().item<float>();
        output.WriteLine($"merged vs unmerged (trained adapter): max |Δ| = {diff:G3}");
        Assert.True(diff < 1e-4);

        var eval = Kvlab("tune-eval", "-m", model, "-z", tok, "--task", "copa=" + TestData.Path("superglue/COPA"), "--max-eval", "3", "-a", dir.Path, "--json");
        Assert.True(eval.Code == 0, eval.Err);
        Assert.Equal(3, (int)JsonNode.Parse(eval.Out)!["tasks"]![0]!["n"]!);
    }

    [Fact]
    public void BadTaskInputsExitWithCodeTwoAndOneLine()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("train.jsonl"), "{\"premise\":\"p\",\"choice1\":\"a\",\"choice2\":\"b\",\"question\":\"cause\",\"label\":5}\n");
        string model = TestData.Path("fixtures/tiny_gpt2"), tok = TestData.Path("gpt2_tokenizer");
        var bad = Kvlab("tune", "-m", model, "-z", tok, "--task", "copa=" + dir.Path, "--out", dir.File("out"));
        Assert.Equal(2, bad.Code);
        Assert.Contains("line 1: \"label\" must be 0 or 1", bad.Err);
        Assert.Single(bad.Err.TrimEnd().Split('\n'));
        var unknown = Kvlab("tune-eval", "-m", model, "-z", tok, "--task", "squad=" + dir.Path);
        Assert.Equal(2, unknown.Code);
        Assert.Contains("unknown task", unknown.Err);
        var targets = Kvlab("tune", "-m", model, "-z", tok, "--task", "copa=" + TestData.Path("superglue/COPA"), "--targets", "keys:gate", "--out", dir.File("out"));
        Assert.Equal(2, targets.Code);
        Assert.Contains("one key matrix", targets.Err);
    }

    [Fact]
    public void GradientCheckpointingTrainsTheSameAdapter()
    {
        using var dir = new TempDir();
        string model = TestData.Path("fixtures/stories260K_hf"), tok = TestData.Path("llama2c_stories260K/tok512.bin");
        string[] Args(string outDir) => ["tune", "-m", model, "-z", tok, "--task", "copa=" + TestData.Path("superglue/COPA"), "--targets", "q,v,keys:up", "--4bit",
            "--epochs", "1", "--batch", "2", "--grad-accum", "1", "--max-train", "4", "--max-steps", "2", "--lr", "0.01", "--dropout", "0.3", "--no-eval", "--out", outDir];
        var plain = Kvlab(Args(dir.File("plain")));
        Assert.True(plain.Code == 0, plain.Err);
        var checkpointed = Kvlab([.. Args(dir.File("checkpointed")), "--gradient-checkpointing"]);
        Assert.True(checkpointed.Code == 0, checkpointed.Err);
        // Recomputing each layer in the backward pass (dropout masks redrawn from restored generator states) gives the same
        // gradients up to float32 rounding, so after two steps the adapters agree to rounding, not bit for bit.
        using var a = KeyValueLab.Checkpoints.SafetensorsFile.Open(Path.Combine(dir.File("plain"), "adapter_model.safetensors"));
        using var b = KeyValueLab.Checkpoints.SafetensorsFile.Open(Path.Combine(dir.File("checkpointed"), "adapter_model.safetensors"));
        Assert.Equal(a.Tensors.Select(t => t.Name).Order(), b.Tensors.Select(t => t.Name).Order());
        foreach (var info in a.Tensors)
        {
            using var x = a.ReadStored(info.Name);
            using var y = b.ReadStored(info.Name);
            KeyValueLab.Tests.Models.TensorAssert.CloseFp32(x, y, info.Name);
        }

        // The refusal on an architecture without checkpointing (now GPT-NeoX and others) is checked on the model
        // (LayerCheckpointTests.ArchitecturesWithoutItRefuse): no tiny fixture of one has a tokenizer of its vocabulary here.
    }
}
