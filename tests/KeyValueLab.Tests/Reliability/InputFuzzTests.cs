using System.Diagnostics;
using System.Text;
using KeyValueLab.Editing;
using KeyValueLab.Models;
using KeyValueLab.Study;
using KeyValueLab.Tests.Study;
using KeyValueLab.Tuning;

namespace KeyValueLab.Tests.Reliability;

/// <summary>
/// Seeded mutations of valid study (JSON and YAML), CounterFact, COPA and config.json files, each read by the loader the
/// CLI uses: every outcome must be a load or an <see cref="InputException"/> whose message is one line naming the file,
/// never another exception. The seed is printed; KVLAB_TEST_SEED replays a run.
/// </summary>
public class InputFuzzTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private const int PerKind = 2600;  // 4 kinds: 10,400 files

    /// <summary>The default seed, so that CI is repeatable: the one whose run found YamlDotNet's ArgumentException.</summary>
    private const int FixedSeed = 614900060;

    private static readonly string[] Extremes =
        ["NaN", "-1", "0", "1e309", "-1e309", "2147483648", "1e300", "null", "true", "[]", "{}", "\"\"", "\"{}\"", "9999999999999999999999", "\"\\ud800\""];

    [Fact]
    public void TenThousandMutatedInputFilesGiveOnlyCleanInputErrors()
    {
        int seed = int.TryParse(Environment.GetEnvironmentVariable("KVLAB_TEST_SEED"), out int given) ? given : FixedSeed;
        output.WriteLine($"fuzz seed {seed}");  // KVLAB_TEST_SEED=<n> explores other mutations; CI runs the fixed seed
        var random = new Random(seed);
        using var dir = new TempDir();
        var clock = Stopwatch.StartNew();

        var study = Studies.FixtureStudy();
        byte[] studyJson = Encoding.UTF8.GetBytes(study.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        byte[] studyYaml = Encoding.UTF8.GetBytes($"""
            name: fuzz
            model: {Studies.Gpt2}
            seeds: [1, 2]
            editing:
              cases: 2
              runs:
                - method: ft
                  sides: [keys, values]
                  layers: "1"
                  set: [steps=3]
            tuning:
              targets: ["c_attn,keys"]
              lr: 0.001
              epochs: 1
            """);
        var records = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Studies.CounterFact))!.AsArray();
        byte[] counterFact = Encoding.UTF8.GetBytes(new System.Text.Json.Nodes.JsonArray([.. records.Take(3).Select(r => r!.DeepClone())]).ToJsonString());
        byte[] copa = Encoding.UTF8.GetBytes(string.Join("\n", File.ReadLines(TestData.Path("superglue/COPA/train.jsonl")).Take(6)) + "\n");
        string model = dir.File("model");
        Directory.CreateDirectory(model);
        File.Copy(Path.Combine(Studies.Gpt2, "model.safetensors"), Path.Combine(model, "model.safetensors"));
        byte[] config = File.ReadAllBytes(Path.Combine(Studies.Gpt2, "config.json"));

        // The loader the CLI uses for each kind, and the name its errors must carry (a config that does not fit the
        // checkpoint is the model folder's problem, named by the folder).
        var kinds = new (string Name, string Path, string Names, Func<int, byte[]> Base, Action<string> Load)[]
        {
            ("study", dir.File("study"), "study.", i => i % 2 == 0 ? studyJson : studyYaml, path => StudySpec.Load(path)),
            ("counterfact", dir.File("counterfact.json"), "counterfact.json", _ => counterFact, path => EditDatasets.Load(path)),
            ("copa", dir.File("copa.jsonl"), "copa.jsonl", _ => copa, path => TaskLoader.ReadFile("copa", path)),
            ("config", Path.Combine(model, "config.json"), model, _ => config, _ => ModelLoader.EstimateBytes(model)),
        };
        var failures = new List<string>();
        int files = 0, loaded = 0;
        foreach (var kind in kinds)
        {
            for (int i = 0; i < PerKind; i++)
            {
                string path = kind.Name == "study" ? kind.Path + (i % 2 == 0 ? ".json" : ".yaml") : kind.Path;
                byte[] bytes = Mutate(kind.Base(i), random);
                File.WriteAllBytes(path, bytes);
                files++;
                try
                {
                    kind.Load(path);
                    loaded++;
                }
                catch (InputException e) when (!e.Message.Contains('\n') && e.Message.Contains(kind.Names, StringComparison.Ordinal)) { }
                catch (Exception e)
                {
                    failures.Add($"{kind.Name} #{i}: {e.GetType().Name}: {e.Message.Split('\n')[0]}");
                }
            }
        }
        output.WriteLine($"{files} mutated files in {clock.Elapsed.TotalSeconds:F1} s: {loaded} loaded, {files - loaded - failures.Count} clean input errors, {failures.Count} other");
        Assert.True(failures.Count == 0, $"seed {seed}: {failures.Count} files gave something other than a clean input error:\n{string.Join("\n", failures.GroupBy(f => f.Split(':')[0].Split(' ')[0] + f.Split(':')[1]).Select(g => $"{g.Count()} × {g.First()}"))}");
        Assert.True(files >= 10_000);
        Assert.True(clock.Elapsed < TimeSpan.FromMinutes(1), $"{clock.Elapsed}");
    }

    /// <summary>One to three edits: a byte changed, inserted or removed, a span repeated or cut, a value swapped for an extreme one, an invalid UTF-8 byte.</summary>
    private static byte[] Mutate(byte[] source, Random random)
    {
        var bytes = new List<byte>(source);
        for (int edits = random.Next(1, 4); edits > 0; edits--)
        {
            int at = random.Next(bytes.Count);
            switch (random.Next(7))
            {
                case 0: bytes[at] = (byte)random.Next(32, 127); break;
                case 1: bytes.Insert(at, (byte)"{}[]\",:-&*!|>\n 0"[random.Next(16)]); break;
                case 2: bytes.RemoveAt(at); break;
                case 3:
                    int length = Math.Min(random.Next(1, 40), bytes.Count - at);
                    bytes.InsertRange(at, bytes.GetRange(at, length));
                    break;
                case 4: bytes.RemoveRange(at, Math.Min(random.Next(1, 200), bytes.Count - at)); break;
                case 5:
                    // The value after a ':' becomes an extreme one.
                    int colon = bytes.IndexOf((byte)':', at);
                    if (colon < 0) break;
                    int end = colon + 1;
                    while (end < bytes.Count && bytes[end] is not ((byte)',' or (byte)'\n' or (byte)'}')) end++;
                    bytes.RemoveRange(colon + 1, end - colon - 1);
                    bytes.InsertRange(colon + 1, Encoding.UTF8.GetBytes(" " + Extremes[random.Next(Extremes.Length)]));
                    break;
                default: bytes.Insert(at, (byte)(random.Next(2) == 0 ? 0xFF : 0xC3)); break;
            }
            if (bytes.Count == 0) break;
        }
        return [.. bytes];
    }
}
