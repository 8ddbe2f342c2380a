using KeyValueLab.Editing;

namespace KeyValueLab.Tests.Editing;

/// <summary><c>--set</c> and a study run's <c>set:</c>: parsed once into typed changes of the hyperparameter records.</summary>
public class HyperparameterOverridesTests
{
    private static string Json<T>(T hp) => HyperparameterFiles.ToJson(hp).ToJsonString();

    [Fact]
    public void OverridesGiveTheRecordThatAFileWithThoseValuesGives()
    {
        // Oracle: the shipped file with the values written into its JSON, read the one way files are read.
        var shipped = System.Text.Json.Nodes.JsonNode.Parse(HyperparameterFiles.Builtin("ROME", "gpt2"))!.AsObject();
        shipped["layers"] = new System.Text.Json.Nodes.JsonArray(3, 4);
        shipped["fact_token"] = "last";
        shipped["v_lr"] = 0.25;
        shipped["mom2_adjustment"] = false;
        shipped["kl_prompts"] = new System.Text.Json.Nodes.JsonArray("{} is", "{} was");
        shipped["context_template_length_params"] = System.Text.Json.Nodes.JsonNode.Parse("[[2, 3]]");
        var expected = HyperparameterFiles.Parse<LocateEditHyperparameters>(shipped.ToJsonString(), "edited");

        var overrides = HyperparameterOverrides.Parse("rome",
            ["layers=[3,4]", "fact_token=last", " v_lr = 0.25 ", "mom2-adjustment=false", "kl_prompts=[\"{} is\", \"{} was\"]", "context_template_length_params=[[2,3]]"]);
        var actual = overrides.ApplyTo(HyperparameterFiles.Load<LocateEditHyperparameters>(null, "ROME", "gpt2"));
        Assert.Equal(Json(expected), Json(actual));
        Assert.Equal(HyperparameterKind.LocateEdit, overrides.Kind);
        Assert.Equal("v_lr = 0.25", overrides.Texts[2]);  // kept as given (trimmed): a study's canonical JSON
    }

    [Fact]
    public void FineTuneOverridesSetTheirFieldsAndLaterOnesWin()
    {
        var hp = HyperparameterOverrides.Parse("ft-l", ["steps=3", "norm_constraint=null", "steps=7", "objective=\"prompt_last\"", "key_kinds=up"])
            .ApplyTo(HyperparameterFiles.Load<FtHyperparameters>(null, "FT-L", "llama"));
        Assert.Equal((7, (double?)null, FtObjective.PromptLast, "up"), (hp.Steps, hp.NormConstraint, hp.Objective, hp.KeyKinds));
        Assert.Equal(HyperparameterFiles.Load<FtHyperparameters>(null, "FT-L", "llama").Lr, hp.Lr);
    }

    [Fact]
    public void AlphaEditsNullSpacePairIsItsOwnAndRefusedElsewhere()
    {
        var hp = HyperparameterOverrides.Parse("alphaedit", ["l2=3", "nullspace_threshold=0.5"]).ApplyTo(HyperparameterFiles.Load<LocateEditHyperparameters>(null, "AlphaEdit", "gpt2"));
        Assert.Equal(new NullSpaceSettings(0.5, 3), NullSpaceSettings.From(hp, "x"));
        Assert.Equal(new NullSpaceSettings(2e-2, 10), NullSpaceSettings.From(HyperparameterFiles.Load<LocateEditHyperparameters>(null, "AlphaEdit", "llama"), "x"));
        Assert.StartsWith("l2: not a hyperparameter of memit", Assert.Throws<ArgumentException>(() => HyperparameterOverrides.Parse("memit", ["l2=3"])).Message);
    }

    [Fact]
    public void RelativeNullSpaceSettingsReplaceTheAbsoluteOnesAndAreRefusedBesideThem()
    {
        var published = HyperparameterFiles.Load<LocateEditHyperparameters>(null, "AlphaEdit", "llama");
        var hp = HyperparameterOverrides.Parse("keyalphaedit", ["nullspace_kept_fraction=0.7", "l2_relative=0.05"]).ApplyTo(published);
        Assert.Equal(new NullSpaceSettings(2e-2, 10, 0.7, 0.05), NullSpaceSettings.From(hp, "x"));
        var json = HyperparameterFiles.ToJson(hp);
        new NullSpaceSettings(2e-2, 10, 0.7, 0.05).WriteTo(json);
        Assert.Equal((0.7, 0.05), (json["nullspace_kept_fraction"]!.GetValue<double>(), json["l2_relative"]!.GetValue<double>()));
        Assert.False(json.ContainsKey("nullspace_threshold") || json.ContainsKey("l2"), json.ToJsonString());
        // The later absolute setting wins back.
        var back = HyperparameterOverrides.Parse("alphaedit", ["nullspace_kept_fraction=0.7", "nullspace_threshold=0.1", "l2_relative=1", "l2=4"]).ApplyTo(published);
        Assert.Equal(new NullSpaceSettings(0.1, 4), NullSpaceSettings.From(back, "x"));
        Assert.Equal("x: nullspace_threshold and nullspace_kept_fraction both set; keep one",
            Assert.Throws<InputException>(() => NullSpaceSettings.From(published with { NullspaceKeptFraction = 0.5 }, "x")).Message);
        Assert.Equal("x: l2 and l2_relative both set; keep one",
            Assert.Throws<InputException>(() => NullSpaceSettings.From(published with { L2Relative = 0.5 }, "x")).Message);
        Assert.StartsWith("l2_relative: not a hyperparameter of memit", Assert.Throws<ArgumentException>(() => HyperparameterOverrides.Parse("memit", ["l2_relative=3"])).Message);
    }

    [Theory]
    [InlineData("alphaedit", "nullspace_kept_fraction=1.5", "nullspace_kept_fraction: must be a finite number > 0 and <= 1, not 1.5")]
    [InlineData("alphaedit", "nullspace_kept_fraction=0", "nullspace_kept_fraction: must be a finite number > 0, not 0")]
    [InlineData("keyalphaedit", "l2_relative=-1", "l2_relative: must be a finite number >= 0, not -1")]
    public void OutOfRangeRelativeNullSpaceSettingsAreRefused(string method, string setting, string problem) =>
        Assert.Equal(problem, Assert.Throws<ArgumentException>(() => HyperparameterOverrides.Parse(method, [setting])).Message);

    [Theory]
    [InlineData("rome", "stepz=3", "stepz: not a hyperparameter of rome (known: layers,")]
    [InlineData("ft", "steps=three", "steps: must be a whole number >= 1, not three")]
    [InlineData("ft", "steps=2.5", "steps: must be a whole number >= 1, not 2.5")]
    [InlineData("ft", "steps=0", "steps: must be a whole number >= 1, not 0")]
    [InlineData("ft", "lr=NaN", "lr: must be a finite number > 0, not NaN")]
    [InlineData("ft", "lr=1e999", "lr: must be a finite number > 0, not 1e999")]
    [InlineData("ft", "lr=0", "lr: must be a finite number > 0, not 0")]
    [InlineData("ft", "lr=\"0.1\"", "lr: must be a finite number > 0, not \"0.1\"")]
    [InlineData("ft", "side=sideways", "side: must be keys or values or both, not sideways")]
    [InlineData("rome", "fact_token=first", "fact_token: must be subject_last or last, not first")]
    [InlineData("ft", "objective=prompt-last", "objective: must be target or prompt_last, not prompt-last")]
    [InlineData("rome", "mom2_adjustment=yes", "mom2_adjustment: must be true or false, not yes")]
    [InlineData("memit", "layers=[1,-2]", "layers: must be a list of layer numbers")]
    [InlineData("rome", "key_kinds=down", "key_kinds: must be gate, up or both, not down")]
    [InlineData("rome", "context_template_length_params=[[5]]", "context_template_length_params: must be a list of [length, count] pairs")]
    [InlineData("rome", "v_lr", "\"v_lr\": expected name=value")]
    [InlineData("rome", "=3", "\"=3\": expected name=value")]
    [InlineData("frobnicate", "steps=3", "unknown method \"frobnicate\"")]
    public void BadOverridesAreRefusedWithOneLineNamingTheField(string method, string setting, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => HyperparameterOverrides.Parse(method, [setting]));
        Assert.StartsWith(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void OverridesParsedForOneRecordAreNotAppliedToAnother()
    {
        var ft = HyperparameterOverrides.Parse("ft", ["steps=3"]);
        Assert.Throws<ArgumentException>(() => ft.ApplyTo(new LocateEditHyperparameters()));
        var none = HyperparameterOverrides.Parse("ft", []);
        Assert.Same(HyperparameterOverrides.None, none);
        Assert.Equal(Json(new LocateEditHyperparameters()), Json(none.ApplyTo(new LocateEditHyperparameters())));
    }
}

/// <summary>Hyperparameter files' values obey the rules of <c>--set</c>: one line <c>FILE: field: problem</c>, the same problem as the override's.</summary>
public sealed class HyperparameterFileRangeTests : IClassFixture<EditorTests.Stories>
{
    private readonly EditorTests.Stories _f;
    public HyperparameterFileRangeTests(EditorTests.Stories f) => _f = f;

    /// <summary>The shipped llama file of <paramref name="method"/> with one field set to <paramref name="value"/> (JSON), read as a user's file through the factory.</summary>
    [Theory]
    [InlineData("ft", "lr", "-0.001", "lr: must be a finite number > 0, not -0.001")]
    [InlineData("ft", "steps", "0", "steps: must be a whole number >= 1, not 0")]
    [InlineData("ft-l", "norm_constraint", "0", "norm_constraint: must be a finite number > 0, not 0")]
    [InlineData("ft", "layers", "[-1]", "layers: must be a list of layer numbers, e.g. [3,4], not [-1]")]
    [InlineData("ft-bf", "batch_size", "0", "batch_size: must be a whole number >= 1, not 0")]
    [InlineData("ft-bf", "epochs", "-3", "epochs: must be a whole number >= 1, not -3")]
    [InlineData("rome", "clamp_norm_factor", "0", "clamp_norm_factor: must be a finite number > 0, not 0")]
    [InlineData("rome", "v_lr", "-0.5", "v_lr: must be a finite number > 0, not -0.5")]
    [InlineData("memit", "mom2_n_samples", "0", "mom2_n_samples: must be a whole number >= 1, not 0")]
    [InlineData("memit", "mom2_update_weight", "-1", "mom2_update_weight: must be a finite number >= 0, not -1")]
    [InlineData("alphaedit", "l2", "-10", "l2: must be a finite number >= 0, not -10")]
    [InlineData("keyalphaedit", "nullspace_threshold", "0", "nullspace_threshold: must be a finite number > 0, not 0")]
    public void AnOutOfRangeValueInAFileIsRefusedWithTheOverridesProblem(string method, string field, string value, string problem)
    {
        string folder = EditorFactory.HparamsFolder(method);
        var json = System.Text.Json.Nodes.JsonNode.Parse(HyperparameterFiles.Builtin(folder, "llama"))!.AsObject();
        json[field] = System.Text.Json.Nodes.JsonNode.Parse(value);
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "bad.json");
        File.WriteAllText(file, json.ToJsonString());
        byte[] before = File.ReadAllBytes(file);
        var e = Assert.Throws<InputException>(() => EditorFactory.Create(_f.Loaded.Model, new EditorChoice { Method = method, HparamsFile = file, Layers = "1" }));
        Assert.Equal((file, problem), (e.FilePath, e.Problem));
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(before, File.ReadAllBytes(file));
        // One validation: the same value as a --set is refused with the same problem.
        Assert.Equal(problem, Assert.Throws<ArgumentException>(() => HyperparameterOverrides.Parse(method, [$"{field}={value}"])).Message);
    }
}
