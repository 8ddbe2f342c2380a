using System.Diagnostics;
using KeyValueLab.Study;

namespace KeyValueLab.Tests.Study;

/// <summary>Study files are parsed within bounds: no alias bomb, no huge file, no key that is not a plain value or repeats.</summary>
public class StudyFileLimitsTests
{
    private static InputException Refused(string name, string text)
    {
        using var dir = new TempDir();
        string path = dir.File(name);
        File.WriteAllText(path, text);
        var e = Assert.Throws<InputException>(() => StudySpec.Load(path));
        Assert.StartsWith(path + ":", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        return e;
    }

    [Fact]
    public void NestedAliasesAreRefusedBeforeTheyExpand()
    {
        // "Billion laughs": 9 levels of 9 aliases each expand to 9⁹ ≈ 387 million nodes from under 1 KB.
        var yaml = new System.Text.StringBuilder("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for (int i = 1; i <= 9; i++)
            yaml.Append($"a{i}: &a{i} [{string.Join(", ", Enumerable.Repeat($"*a{i - 1}", 9))}]\n");
        Assert.True(yaml.Length < 1000);
        var clock = Stopwatch.StartNew();
        var e = Refused("bomb.yaml", yaml.ToString());
        Assert.Contains("expands to more than 100,000 nodes", e.Message);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"{clock.Elapsed}");
    }

    [Fact]
    public void AKeyThatIsNotAPlainValueOrRepeatsIsRefused()
    {
        Assert.Contains("a mapping key must be a plain value", Refused("key.yaml", "? [a, b]\n: 1\nname: x\n").Message);
        var dup = Refused("dup.yaml", "name: x\nname: y\n").Message;
        Assert.True(dup.Contains("duplicate key", StringComparison.OrdinalIgnoreCase), dup);
    }

    [Fact]
    public void AFileOverTheSizeLimitIsNotRead()
    {
        var e = Refused("big.yaml", "name: x\n# " + new string('x', (int)StudySpec.MaxFileBytes) + "\n");
        Assert.Contains("a study file is at most", e.Message);
    }
}
