using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using KeyValueLab.Cli;

namespace KeyValueLab.Tests.Cli;

/// <summary>Runs kvlab in-process with captured stdout/stderr.</summary>
internal static class Kvlab
{
    public static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var task = Task.Run(() => Program.Run(args, stdout, stderr));
        if (!task.Wait(TimeSpan.FromSeconds(600))) throw new TimeoutException($"kvlab {string.Join(' ', args)} did not finish in 600 s");
        return (task.Result, stdout.ToString(), stderr.ToString());
    }
}

public class GenerateCliTests
{
    private static readonly string Stories = TestData.Path("llama2c_stories260K");

    [Fact]
    public void Greedy200StepsPrintsExactlyWhatLlama2cPrints()
    {
        var (code, stdout, stderr) = Kvlab.Run("generate", "--model", Path.Combine(Stories, "stories260K.bin"),
            "--tokenizer", Path.Combine(Stories, "tok512.bin"), "--temperature", "0", "--steps", "200");
        Assert.True(code == 0, stderr);
        Assert.Equal(File.ReadAllText(Path.Combine(Stories, "run_t0_n200.txt")), stdout);
        Assert.Contains("tok/s", stderr); // diagnostics go to stderr only
    }

    [Fact]
    public void PromptedGreedyPrintsExactlyWhatLlama2cPrints()
    {
        var (code, stdout, stderr) = Kvlab.Run("generate", "-m", Path.Combine(Stories, "stories260K.bin"),
            "-z", Path.Combine(Stories, "tok512.bin"), "-t", "0", "-n", "64", "-i", "Once upon a time");
        Assert.True(code == 0, stderr);
        Assert.Equal(File.ReadAllText(Path.Combine(Stories, "run_t0_n64_once_upon_a_time.txt")), stdout);
    }

    [Fact]
    public void SamplingIsSeeded()
    {
        string[] args = ["generate", "-m", Path.Combine(Stories, "stories260K.bin"), "-z", Path.Combine(Stories, "tok512.bin"), "-n", "40", "--top-k", "20", "-p", "0.95"];
        var a = Kvlab.Run([.. args, "--seed", "5"]);
        var b = Kvlab.Run([.. args, "--seed", "5"]);
        var c = Kvlab.Run([.. args, "--seed", "6"]);
        Assert.Equal(0, a.Code);
        Assert.Equal(a.Stdout, b.Stdout);
        Assert.NotEqual(a.Stdout, c.Stdout);
    }

    [Fact]
    public void HuggingFaceFolderWithItsTokenizerGenerates()
    {
        using var dir = new TempDir();
        foreach (var f in Directory.GetFiles(TestData.Path("fixtures/tiny_gpt2"))) File.Copy(f, dir.File(Path.GetFileName(f)));
        foreach (var f in new[] { "vocab.json", "merges.txt" }) File.Copy(TestData.Path("gpt2_tokenizer/" + f), dir.File(f));
        var (code, stdout, stderr) = Kvlab.Run("generate", "-m", dir.Path, "-i", "The capital of France is", "-n", "12", "-t", "0");
        Assert.True(code == 0, stderr);
        Assert.StartsWith("The capital of France is", stdout);
    }

    [Fact]
    public void InspectListsMemoriesAndPromotedTokens()
    {
        var (code, stdout, stderr) = Kvlab.Run("inspect", "-m", Path.Combine(Stories, "stories260K.bin"), "-z", Path.Combine(Stories, "tok512.bin"),
            "-i", "Lily went to the park", "-l", "2", "--top", "4", "--tokens", "3", "--json");
        Assert.True(code == 0, stderr);
        var report = JsonNode.Parse(stdout)!.AsObject();
        Assert.Equal(2, (int)report["Layer"]!);
        var memories = report["Memories"]!.AsArray();
        Assert.Equal(4, memories.Count);
        var coefficients = memories.Select(m => (double)m!["Coefficient"]!).ToArray();
        Assert.Equal(coefficients.OrderByDescending(c => c), coefficients);
        Assert.All(memories, m => Assert.Equal(3, m!["PromotedTokens"]!.AsArray().Count));
    }

    /// <summary>Every command and subcommand kvlab has (walked from the root), as the words typed to reach it.</summary>
    public static TheoryData<string> Commands()
    {
        var data = new TheoryData<string>();
        void Walk(System.CommandLine.Command c, string path)
        {
            foreach (var sub in c.Subcommands)
            {
                string name = (path + " " + sub.Name).Trim();
                data.Add(name);
                Walk(sub, name);
            }
        }
        Walk(Program.Root(TextWriter.Null, TextWriter.Null), "");
        return data;
    }

    [Fact]
    public void TheTenCommandsAreThere() =>
        Assert.Equal(["edit", "edit-eval", "export", "generate", "inspect", "organism", "report", "study", "tune", "tune-eval"],
            Program.Root(TextWriter.Null, TextWriter.Null).Subcommands.Select(c => c.Name).Order(StringComparer.Ordinal));

    [Theory]
    [MemberData(nameof(Commands))]
    public void EveryCommandHasHelp(string command)
    {
        // The help names the command's purpose and every option and argument, each with its description.
        System.CommandLine.Command found = Program.Root(TextWriter.Null, TextWriter.Null);
        foreach (string word in command.Split(' ')) found = found.Subcommands.Single(c => c.Name == word);
        var (code, stdout, stderr) = Kvlab.Run([.. command.Split(' '), "--help"]);
        Assert.True(code == 0, stderr);
        Assert.Contains(found.Description!, System.Text.RegularExpressions.Regex.Replace(stdout, @"\s+", " "));
        foreach (var option in found.Options.Where(o => !o.Hidden))
        {
            Assert.Contains(option.Name, stdout);
            Assert.False(string.IsNullOrWhiteSpace(option.Description), $"{command} {option.Name} has no description");
            Assert.Contains(option.Description!.Split(' ')[0], stdout);
        }
        foreach (var argument in found.Arguments) Assert.Contains(argument.Name, stdout);
        foreach (var sub in found.Subcommands) Assert.Contains(sub.Name, stdout);
    }

    [Fact]
    public void UsageErrorsExitWithTwo()
    {
        Assert.Equal(2, Kvlab.Run("generate").Code);                         // --model missing
        Assert.Equal(2, Kvlab.Run("generate", "-m", "x", "--steps", "many").Code);
        var (code, _, stderr) = Kvlab.Run("generate", "-m", Path.Combine(Stories, "stories260K.bin"), "-z", Path.Combine(Stories, "tok512.bin"), "--top-p", "1.5");
        Assert.Equal(2, code);
        Assert.Contains("--top-p", stderr);
        Assert.Equal(2, Kvlab.Run("inspect", "-m", Path.Combine(Stories, "stories260K.bin"), "-z", Path.Combine(Stories, "tok512.bin"), "-i", "a", "-l", "9").Code);
    }
}

/// <summary>
/// Every kind of malformed input gives exit code 2 and one line on stderr naming the file at fault,
/// prints nothing on stdout, and leaves the input untouched.
/// </summary>
public class BadInputCliTests
{
    private static readonly string Stories = TestData.Path("llama2c_stories260K");
    private static readonly string Gpt2Tokenizer = TestData.Path("gpt2_tokenizer");

    /// <summary>Builds a broken input in a temp folder; returns the --model path, the tokenizer, the file at fault and a word of the problem.</summary>
    internal delegate (string Model, string Tokenizer, string Culprit, string Problem) Breaker(TempDir dir);

    public static TheoryData<string> Cases => new(BreakerTable.Keys);

    private static readonly Dictionary<string, Breaker> BreakerTable = new()
    {
        ["truncated safetensors"] = d => Gpt2(d, st => st[..(st.Length / 2)], "model.safetensors", "past the end"),
        ["empty safetensors"] = d => Gpt2(d, _ => [], "model.safetensors", "bytes"),
        ["header length past end of file"] = d => Gpt2(d, st => { var c = (byte[])st.Clone(); BinaryPrimitives.WriteUInt64LittleEndian(c, 1UL << 40); return c; }, "model.safetensors", "header"),
        ["header not JSON"] = d => Gpt2(d, st => WithHeader(st, _ => "{not json at all"), "model.safetensors", "JSON"),
        ["unknown dtype"] = d => Gpt2(d, st => EditHeader(st, h => h[FirstTensor(h)]!["dtype"] = "Q7"), "model.safetensors", "dtype"),
        ["span does not match shape"] = d => Gpt2(d, st => EditHeader(st, h => h[FirstTensor(h)]!["shape"]!.AsArray()[0] = 3), "model.safetensors", "shape"),
        ["overlapping spans"] = d => Gpt2(d, st => EditHeader(st, h => Overlap(h)), "model.safetensors", "overlap"),
        ["missing tensor"] = d => Gpt2(d, st => EditHeader(st, h => h.Remove("transformer.h.1.mlp.c_fc.weight")), d.Path, "missing: transformer.h.1.mlp.c_fc.weight"),
        ["wrong shape"] = d => Gpt2(d, st => EditHeader(st, h => SwapShape(h, "transformer.h.0.ln_1.weight", [4, 4])), d.Path, "transformer.h.0.ln_1.weight expected [16] found [4, 4]"),
        ["index names a missing shard"] = d =>
        {
            Copy("fixtures/tiny_gpt2_bf16_sharded", d);
            File.Delete(d.File("model-00002-of-00003.safetensors"));
            return (d.Path, Gpt2Tokenizer, "model-00002-of-00003.safetensors", "does not exist");
        },
        ["unknown model_type"] = d => Gpt2Config(d, c => c["model_type"] = "mamba", "config.json", "gpt2"),
        ["config missing a field"] = d => Gpt2Config(d, c => c.Remove("n_embd"), "config.json", "n_embd"),
        ["config not JSON"] = d =>
        {
            Copy("fixtures/tiny_gpt2", d);
            File.WriteAllText(d.File("config.json"), "{ \"model_type\": \"gpt2\", ");
            return (d.Path, Gpt2Tokenizer, "config.json", "JSON");
        },
        ["no config.json"] = d =>
        {
            Copy("fixtures/tiny_gpt2", d);
            File.Delete(d.File("config.json"));
            return (d.Path, Gpt2Tokenizer, "config.json", "");
        },
        ["truncated llama2.c file"] = d =>
        {
            byte[] bin = File.ReadAllBytes(Path.Combine(Stories, "stories260K.bin"));
            File.WriteAllBytes(d.File("model.bin"), bin[..(bin.Length - 1000)]);
            return (d.File("model.bin"), Path.Combine(Stories, "tok512.bin"), "model.bin", "bytes");
        },
        ["llama2.c header inconsistent"] = d =>
        {
            byte[] bin = File.ReadAllBytes(Path.Combine(Stories, "stories260K.bin"));
            BinaryPrimitives.WriteInt32LittleEndian(bin.AsSpan(12), 7); // 7 heads do not divide dim 64
            File.WriteAllBytes(d.File("model.bin"), bin);
            return (d.File("model.bin"), Path.Combine(Stories, "tok512.bin"), "model.bin", "head");
        },
        ["corrupt tokenizer.bin"] = d =>
        {
            byte[] tok = File.ReadAllBytes(Path.Combine(Stories, "tok512.bin"));
            File.WriteAllBytes(d.File("tok.bin"), tok[..(tok.Length / 3)]);
            return (Path.Combine(Stories, "stories260K.bin"), d.File("tok.bin"), "tok.bin", "");
        },
        ["tokenizer.json not JSON"] = d =>
        {
            Copy("fixtures/tiny_gpt2", d);
            File.WriteAllText(d.File("tokenizer.json"), "\u0000\u0001garbage");
            return (d.Path, d.Path, "tokenizer.json", "JSON");
        },
        ["model path does not exist"] = d => (d.File("nowhere"), Gpt2Tokenizer, "nowhere", ""),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void MalformedInputGivesOneLineAndExitCodeTwo(string name)
    {
        using var dir = new TempDir();
        var (model, tokenizer, culprit, problem) = BreakerTable[name](dir);
        var before = Snapshot(dir.Path);

        var (code, stdout, stderr) = Kvlab.Run("generate", "--model", model, "--tokenizer", tokenizer, "--steps", "4", "-t", "0");

        Assert.True(code == 2, $"{name}: exit {code}, stderr: {stderr}");
        Assert.Equal("", stdout);
        string line = stderr.TrimEnd('\n');
        Assert.DoesNotContain('\n', line);
        Assert.StartsWith("kvlab: ", line);
        Assert.True(line.Contains(culprit), $"{name}: '{culprit}' not named in: {line}");
        Assert.True(line.Contains(problem, StringComparison.OrdinalIgnoreCase), $"{name}: '{problem}' not said in: {line}");
        Assert.Equal(before, Snapshot(dir.Path)); // inputs never modified, nothing written
    }

    [Fact]
    public void FifteenOrMoreBrokenInputsGetFifteenOrMoreDistinctMessages()
    {
        // Each broken input is reported in its own words (not one catch-all line): the messages, with the temporary folder
        // blanked out, are as many as the cases.
        var messages = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (name, make) in BreakerTable)
        {
            using var dir = new TempDir();
            var (model, tokenizer, _, _) = make(dir);
            var (code, _, stderr) = Kvlab.Run("generate", "--model", model, "--tokenizer", tokenizer, "--steps", "4", "-t", "0");
            Assert.True(code == 2, $"{name}: exit {code}");
            messages.Add(stderr.Trim().Replace(dir.Path, "DIR"));
        }
        Assert.True(messages.Count >= 15 && messages.Count == BreakerTable.Count, $"{messages.Count} distinct messages for {BreakerTable.Count} cases:\n{string.Join("\n", messages)}");
    }

    private static Dictionary<string, string> Snapshot(string folder) =>
        Directory.GetFiles(folder, "*", SearchOption.AllDirectories)
            .ToDictionary(f => f, f => Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(f))));

    private static void Copy(string fixture, TempDir dir)
    {
        foreach (var f in Directory.GetFiles(TestData.Path(fixture))) File.Copy(f, dir.File(Path.GetFileName(f)));
    }

    private static (string, string, string, string) Gpt2(TempDir dir, Func<byte[], byte[]> breakIt, string culprit, string problem)
    {
        Copy("fixtures/tiny_gpt2", dir);
        File.WriteAllBytes(dir.File("model.safetensors"), breakIt(File.ReadAllBytes(dir.File("model.safetensors"))));
        return (dir.Path, Gpt2Tokenizer, culprit, problem);
    }

    private static (string, string, string, string) Gpt2Config(TempDir dir, Action<JsonObject> edit, string culprit, string problem)
    {
        Copy("fixtures/tiny_gpt2", dir);
        var config = JsonNode.Parse(File.ReadAllText(dir.File("config.json")))!.AsObject();
        edit(config);
        File.WriteAllText(dir.File("config.json"), config.ToJsonString());
        return (dir.Path, Gpt2Tokenizer, culprit, problem);
    }

    private static byte[] WithHeader(byte[] st, Func<string, string> edit)
    {
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(st);
        string header = Encoding.UTF8.GetString(st, 8, n);
        byte[] newHeader = Encoding.UTF8.GetBytes(edit(header));
        var result = new byte[8 + newHeader.Length + st.Length - 8 - n];
        BinaryPrimitives.WriteUInt64LittleEndian(result, (ulong)newHeader.Length);
        newHeader.CopyTo(result, 8);
        st.AsSpan(8 + n).CopyTo(result.AsSpan(8 + newHeader.Length));
        return result;
    }

    private static byte[] EditHeader(byte[] st, Action<JsonObject> edit) => WithHeader(st, text =>
    {
        var header = JsonNode.Parse(text)!.AsObject();
        edit(header);
        return header.ToJsonString();
    });

    private static string FirstTensor(JsonObject header) => header.First(p => p.Key != "__metadata__").Key;

    private static void Overlap(JsonObject header)
    {
        var tensors = header.Where(p => p.Key != "__metadata__").Select(p => p.Value!.AsObject()).ToList();
        // Shift the second tensor's span back by 4 bytes into the first one's (same length, so size checks pass).
        var offsets = tensors.OrderBy(t => (long)t["data_offsets"]![0]!).Skip(1).First()["data_offsets"]!.AsArray();
        long begin = (long)offsets[0]!, end = (long)offsets[1]!;
        offsets[0] = begin - 4;
        offsets[1] = end - 4;
    }

    private static void SwapShape(JsonObject header, string name, long[] shape)
    {
        // Give `name` a different but equally sized shape, so only the model's expectations catch it.
        long elements = header[name]!["shape"]!.AsArray().Aggregate(1L, (a, v) => a * (long)v!);
        Assert.Equal(shape.Aggregate(1L, (a, v) => a * v), elements);
        header[name]!["shape"] = new JsonArray([.. shape.Select(v => (JsonNode)v)]);
    }
}

/// <summary>The real kvlab process (as built next to the tests): exit codes and the stdout/stderr split.</summary>
public class KvlabProcessTests
{
    private static (int Code, string Stdout, string Stderr) Exec(params string[] args)
    {
        var psi = new System.Diagnostics.ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "kvlab.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = System.Diagnostics.Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(60_000)) { p.Kill(true); throw new TimeoutException("kvlab did not exit in 60 s"); }
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    [Fact]
    public void ProcessPrintsOnlyTheTextOnStdoutAndExitsTwoOnBadInput()
    {
        string stories = TestData.Path("llama2c_stories260K");
        var ok = Exec("generate", "-m", Path.Combine(stories, "stories260K.bin"), "-z", Path.Combine(stories, "tok512.bin"), "-t", "0", "-n", "64", "-i", "Once upon a time");
        Assert.True(ok.Code == 0, ok.Stderr);
        Assert.Equal(File.ReadAllText(Path.Combine(stories, "run_t0_n64_once_upon_a_time.txt")), ok.Stdout);

        using var dir = new TempDir();
        File.WriteAllBytes(dir.File("broken.bin"), new byte[10]);
        var bad = Exec("generate", "-m", dir.File("broken.bin"), "-z", Path.Combine(stories, "tok512.bin"));
        Assert.Equal(2, bad.Code);
        Assert.Equal("", bad.Stdout);
        Assert.Single(bad.Stderr.TrimEnd('\n').Split('\n'));
        Assert.Contains("broken.bin", bad.Stderr);
    }
}
