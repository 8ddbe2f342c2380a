using KeyValueLab.Editing;

namespace KeyValueLab.Tests.Editing;

public class EditDatasetTests
{
    [Fact]
    public void CounterFactOriginalSchemaLoads()
    {
        var cases = EditDatasets.Load(TestData.Path("counterfact/counterfact_500.json"));
        Assert.Equal(500, cases.Count);
        var c = cases[0];
        Assert.Equal(EditDatasetFormat.CounterFact, c.Format);
        Assert.Equal("20952", c.CaseId);
        Assert.Equal("Angola is located in", c.Request.FilledPrompt);
        Assert.Equal(("Antarctica", "Africa"), (c.Request.TargetNew, c.Request.TargetTrue));
        Assert.Equal(2, c.ParaphrasePrompts.Count);
        Assert.Equal(10, c.NeighborhoodPrompts.Count);
        Assert.Equal(10, c.GenerationPrompts.Count);
        Assert.All(c.Locality, l => Assert.Equal("Africa", l.Target));
    }

    [Fact]
    public void EasyEditFlatCounterFactLoads()
    {
        var cases = EditDatasets.Load(TestData.Path("counterfact/counterfact-val_easyedit.json"));
        Assert.Equal(1919, cases.Count);
        var c = cases[0];
        Assert.Equal(EditDatasetFormat.CounterFactEasyEdit, c.Format);
        Assert.Equal("{}, by", c.Request.Prompt);
        Assert.Equal(("Sega", "BBC"), (c.Request.TargetNew, c.Request.TargetTrue));
        Assert.Equal(["BBC One is my favorite product out of everything owned by"], c.ParaphrasePrompts);
        Assert.Equal(new PromptTarget("BBC Radio, by", "BBC"), Assert.Single(c.Locality));
    }

    [Fact]
    public void ZsreLoadsWithEitherTarget()
    {
        var cases = EditDatasets.Load(TestData.Path("zsre/zsre_mend_train-1k.json"));
        Assert.Equal(1000, cases.Count);
        var c = cases[0];
        Assert.Equal(EditDatasetFormat.Zsre, c.Format);
        Assert.Equal("What is the product made by {}?", c.Request.Prompt);
        Assert.Equal("uniform", c.Request.TargetNew);
        Assert.Null(c.Request.TargetTrue);
        Assert.Equal(new PromptTarget("nq question: john goodman's character in the big lebowski", "Walter Sobchak"), Assert.Single(c.Locality));

        // Two records have an empty alt: inserting alt (EasyEdit) stops at the first, named.
        var e = Assert.Throws<InputException>(() => EditDatasets.Load(TestData.Path("zsre/zsre_mend_train-1k.json"), ZsreTarget.Alt));
        Assert.Matches(@"zsre_mend_train-1k\.json: record \d+: field ""alt"" is empty", e.Message);
    }

    public static TheoryData<string, string> BadRecords => new()
    {
        { """[{"case_id": 7, "requested_rewrite": {"prompt": "{} is in", "subject": "Paris", "target_new": {"str": ""}, "target_true": {"str": "France"}}, "paraphrase_prompts": ["x"], "neighborhood_prompts": ["y"]}]""",
          @"record 0 \(case_id 7\): field ""requested_rewrite.target_new.str"" is empty" },
        { """[{"case_id": 7, "requested_rewrite": {"prompt": "Paris is in", "subject": "Paris", "target_new": {"str": "Italy"}, "target_true": {"str": "France"}}, "paraphrase_prompts": ["x"], "neighborhood_prompts": ["y"]}]""",
          @"record 0 \(case_id 7\): requested_rewrite.prompt has no ""\{\}""" },
        { """[{"case_id": 7, "requested_rewrite": {"prompt": "{} is in", "subject": "Paris", "target_new": {"str": "Italy"}, "target_true": {"str": "France"}}, "neighborhood_prompts": ["y"]}]""",
          @"record 0 \(case_id 7\): missing field ""paraphrase_prompts""" },
        { """[{"case_id": 1, "prompt": "The Louvre is in", "subject": "Eiffel Tower", "target_new": "Rome", "ground_truth": "Paris", "rephrase_prompt": "a", "locality_prompt": "b", "locality_ground_truth": "c"}]""",
          @"record 0 \(case_id 1\): subject ""Eiffel Tower"" does not occur in prompt" },
        { """[{"subject": "X", "src": "What is X?", "rephrase": "X?", "alt": "a", "answers": ["b"], "loc": "nq question: q", "loc_ans": "c"}, {"subject": "Y", "src": "What is Z?", "rephrase": "Y?", "alt": "a", "answers": ["b"], "loc": "nq question: q", "loc_ans": "c"}]""",
          @"record 1: subject ""Y"" does not occur in src" },
        { """[{"subject": "X", "src": "What is X?", "rephrase": "X?", "alt": "a", "answers": [], "loc": "nq question: q", "loc_ans": "c"}]""",
          @"record 0: field ""answers"" is empty" },
        { """[]""", "holds no records" },
        { """{"a": 1}""", "expected a JSON array" },
        { """[{"foo": 1}]""", "neither CounterFact" },
        { """[{"case_id": 1, "requested_rewrite": {"prompt": "{} is in", "subject": "A", "target_new": {"str": "B"}, "target_true": {"str": "C"}}, "paraphrase_prompts": ["x"], "neighborhood_prompts": ["y"]}, {"case_id": 1, "requested_rewrite": {"prompt": "{} is in", "subject": "A", "target_new": {"str": "B"}, "target_true": {"str": "C"}}, "paraphrase_prompts": ["x"], "neighborhood_prompts": ["y"]}]""",
          @"record 1 \(case_id 1\): duplicate case_id 1" },
    };

    [Theory]
    [MemberData(nameof(BadRecords))]
    public void BadRecordsAreRejectedByName(string json, string expected)
    {
        using var dir = new TempDir();
        string file = dir.File("bad.json");
        File.WriteAllText(file, json);
        var e = Assert.Throws<InputException>(() => EditDatasets.Load(file));
        Assert.Equal(file, e.FilePath);
        Assert.Matches(expected, e.Problem);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Theory]
    [InlineData("AlphaEdit", "mistral", "llama")]
    [InlineData("KeyAlphaEdit", "qwen2", "llama")]
    [InlineData("KeyMEMIT", "gemma", "llama")]
    [InlineData("AlphaEdit", "gpt2", "gpt2")]
    [InlineData("AlphaEdit", "gemma2", "llama")]
    [InlineData("FT-BF", "phi3", "llama")]
    [InlineData("FT-BF", "gemma", "llama")]
    [InlineData("ROME", "mistral", "mistral")]     // a file of its own wins
    public void ModelTypesWithoutTheirOwnFileReadTheirDescriptorsFallback(string method, string modelType, string family) =>
        Assert.Equal(family, HyperparameterFiles.Family(method, modelType));

    /// <summary>
    /// Every registered architecture, every method: the shipped file is its own or its descriptor's fallback's, and parses as
    /// the method's record; where neither is shipped, one line naming the file looked for. Only GPT-NeoX lacks the lifelong
    /// editors' files (AlphaEdit's authors published GPT-2 XL, GPT-J and Llama-3-8B), so only those are refused.
    /// </summary>
    [Fact]
    public void EveryArchitectureResolvesAHyperparameterFileForEveryMethod()
    {
        var refused = new List<string>();
        foreach (string modelType in KeyValueLab.Models.Architectures.Supported)
            foreach (string method in EditorFactory.Methods)
            {
                string folder = EditorFactory.HparamsFolder(method);
                try
                {
                    string family = HyperparameterFiles.Family(folder, modelType);
                    Assert.True(family == modelType || family == KeyValueLab.Models.Architectures.Of(modelType).HyperparameterFallback, $"{method} on {modelType} read {family}");
                    int[] layers = HyperparameterOverrides.KindOf(method) switch
                    {
                        HyperparameterKind.FineTune => HyperparameterFiles.Load<FtHyperparameters>(null, folder, modelType).Layers,
                        HyperparameterKind.BreadthFirstFineTune => HyperparameterFiles.Load<BreadthFirstFtHyperparameters>(null, folder, modelType).Layers,
                        _ => HyperparameterFiles.Load<LocateEditHyperparameters>(null, folder, modelType).Layers,
                    };
                    Assert.NotEmpty(layers);
                }
                catch (InputException e)
                {
                    Assert.Equal($"hparams/{folder}/{modelType}.json", e.FilePath);
                    Assert.Contains("pass --hparams FILE", e.Problem);
                    Assert.DoesNotContain('\n', e.Message);
                    refused.Add($"{method}/{modelType}");
                }
            }
        Assert.Equal(["alphaedit/gpt_neox", "keyalphaedit/gpt_neox", "keymemit/gpt_neox"], refused);
    }

    [Fact]
    public void ShippedHyperparametersParseForEveryMethodAndFamily()
    {
        foreach (string family in KeyValueLab.Models.Architectures.Supported)
        {
            Assert.Equal(25, HyperparameterFiles.Load<FtHyperparameters>(null, "FT", family).Steps);
            Assert.NotNull(HyperparameterFiles.Load<FtHyperparameters>(null, "FT-L", family).NormConstraint);
            Assert.Single(HyperparameterFiles.Load<LocateEditHyperparameters>(null, "ROME", family).Layers);
            Assert.Single(HyperparameterFiles.Load<LocateEditHyperparameters>(null, "KeyROME", family).Layers);
            Assert.True(HyperparameterFiles.Load<LocateEditHyperparameters>(null, "MEMIT", family).Layers.Length >= 5);
        }
        var rome = HyperparameterOverrides.Parse("rome", ["layers=[3]", "mom2_corpus=corpus.txt"]).ApplyTo(HyperparameterFiles.Load<LocateEditHyperparameters>(null, "ROME", "gpt2"));
        Assert.Equal([3], rome.Layers);
        Assert.Equal(("corpus.txt", 0.0625), (rome.Mom2Corpus, rome.KlFactor));
        Assert.Equal(17, HyperparameterFiles.Load<LocateEditHyperparameters>(null, "ROME", "gpt2").Layers[0]);
        Assert.Equal(20000, HyperparameterFiles.Load<LocateEditHyperparameters>(null, "MEMIT", "gpt2").Mom2UpdateWeight);
        var e = Assert.Throws<ArgumentException>(() => HyperparameterOverrides.Parse("ft", ["stepz=3"]));
        Assert.StartsWith("stepz: not a hyperparameter of ft", e.Message);
    }
}
