using KeyValueLab.Models;
using KeyValueLab.Statistics;
using KeyValueLab.Tokenization;
using KeyValueLab.Tuning;
using Xunit.Abstractions;

namespace KeyValueLab.Tests.Tuning;

public class TaskTests(ITestOutputHelper output)
{
    [Fact]
    public void SuperGlueAndGlueFilesLoadWithThePapersTemplates()
    {
        var copa = TaskLoader.Load("copa", TestData.Path("superglue/COPA"));
        Assert.Equal(400, copa.Train.Count);
        Assert.Equal(100, copa.Eval.Count);
        var first = TaskLoader.ReadFile("copa", TestData.Path("superglue/COPA/val.jsonl"))[0];
        Assert.Equal("### Premise:The man turned on the faucet. ### Choice1:The toilet filled with water. ### Choice2:Water flowed from the spout. ### Question:effect ### Choice:", first.Prompt);
        Assert.Equal("Choice2", first.Label);

        var cb = TaskLoader.Load("cb", TestData.Path("superglue/CB"));
        Assert.Equal(250, cb.Train.Count);
        Assert.Equal(56, cb.Eval.Count);
        Assert.All(cb.Eval, e => Assert.Contains(e.Label, TaskPrompts.Nli3Labels));
        Assert.EndsWith("### Relationship (entailment, contradiction or neutral):", cb.Eval[0].Prompt);

        var rte = TaskLoader.Load("rte", TestData.Path("superglue/RTE"));
        Assert.Equal(2490, rte.Train.Count);
        Assert.Equal(277, rte.Eval.Count);
        var glueRte = TaskLoader.Load("rte", TestData.Path("glue/RTE"));
        Assert.Equal(277, glueRte.Eval.Count);
        Assert.Equal(rte.Eval[0], glueRte.Eval[0]);  // same dev set in both releases

        var qnli = TaskLoader.Load("qnli", TestData.Path("glue/QNLI/dev.tsv"), new TaskSelection { MaxEval = 1000 });
        Assert.Equal(1000, qnli.Eval.Count);  // the cap
        Assert.Equal(5463 - 1000, qnli.Train.Count);

        var boolq = TaskLoader.Load("boolq", TestData.Path("superglue/BoolQ"), new TaskSelection { MaxTrain = 300 });
        Assert.Equal(300, boolq.Train.Count);
        Assert.StartsWith("Read the Passage and answer the Question with true or false ### Question:", boolq.Train[0].Prompt);
        Assert.Contains(boolq.Train[0].Label, new[] { "true", "false" });
        Assert.Empty(boolq.Train.Intersect(boolq.Eval));
        output.WriteLine(boolq.SplitNote);
    }

    [Fact]
    public void ShufflingIsSeededAndCanBeTurnedOff()
    {
        var a = TaskLoader.Load("rte", TestData.Path("superglue/RTE"), new TaskSelection { MaxTrain = 50, Seed = 1 });
        var b = TaskLoader.Load("rte", TestData.Path("superglue/RTE"), new TaskSelection { MaxTrain = 50, Seed = 1 });
        var c = TaskLoader.Load("rte", TestData.Path("superglue/RTE"), new TaskSelection { MaxTrain = 50, Seed = 2 });
        var paper = TaskLoader.Load("rte", TestData.Path("superglue/RTE"), new TaskSelection { MaxTrain = 50, Shuffle = false });
        Assert.Equal(a.Train, b.Train);
        Assert.NotEqual(a.Train, c.Train);
        Assert.Equal(TaskLoader.ReadFile("rte", TestData.Path("superglue/RTE/train.jsonl")).Take(50), paper.Train);
    }

    [Fact]
    public void OtherReleaseFormatsParse()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("race.json"), """{"answers":["B","D"],"options":[["a","b","c","d"],["e","f","g","h"]],"questions":["Q1?","Q2?"],"article":"Text.","id":"high1.txt"}""");
        var race = TaskLoader.ReadFile("race-high", dir.File("race.json"));
        Assert.Equal(2, race.Count);
        Assert.Equal("Read Context and answer question ### Context:Text. ### Question:Q2? ### Options:A.e. B.f. C.g. D.h### Choice:", race[1].Prompt);
        Assert.Equal("D", race[1].Label);

        File.WriteAllText(dir.File("csqa.jsonl"), """{"answerKey":"C","id":"x","question":{"question_concept":"c","choices":[{"label":"A","text":"a"},{"label":"B","text":"b"},{"label":"C","text":"c"},{"label":"D","text":"d"},{"label":"E","text":"e"}],"stem":"Why?"}}""" + "\n");
        var csqa = TaskLoader.ReadFile("csqa", dir.File("csqa.jsonl"));
        Assert.Equal("According to the Question, select the best choice among the Options. ### Question:Why? ### Options:A.a. B.b. C.c. D.d E.e ### Choice:", csqa[0].Prompt);

        File.WriteAllText(dir.File("ng.jsonl"), """{"text":"GPUs are fast","label":"comp.graphics"}""" + "\n");
        Assert.Equal(new TaskExample("20newsgroups", "### Sentence:GPUs are fast ### Class:", "comp.graphics"), TaskLoader.ReadFile("20ng", dir.File("ng.jsonl"))[0]);

        File.WriteAllText(dir.File("mnli.tsv"), "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n0\t1\t1e\tfiction\t(x)\t(y)\t(x)\t(y)\tA man sleeps.\tA person rests.\tentailment\tentailment\n");
        Assert.Equal("entailment", TaskLoader.ReadFile("mnli", dir.File("mnli.tsv"))[0].Label);
        File.WriteAllText(dir.File("wnli.tsv"), "index\tsentence1\tsentence2\tlabel\n0\tA\tB\t1\n1\tC\tD\t0\n");
        Assert.Equal(["entailment", "not_entailment"], TaskLoader.ReadFile("wnli", dir.File("wnli.tsv")).Select(e => e.Label));
    }

    [Theory]
    [InlineData("copa", "{\"premise\":\"p\",\"choice1\":\"a\",\"choice2\":\"b\",\"question\":\"cause\",\"label\":7}\n", "line 1: \"label\" must be 0 or 1")]
    [InlineData("copa", "{\"premise\":\"p\",\"choice2\":\"b\",\"question\":\"cause\",\"label\":0}\n", "line 1: missing text field \"choice1\"")]
    [InlineData("cb", "{\"premise\":\"p\",\"hypothesis\":\"h\",\"label\":\"entailment\"}\n{not json\n", "line 2: not valid JSON")]
    [InlineData("cb", "{\"premise\":\"p\",\"hypothesis\":\"h\",\"label\":\"maybe\"}\n", "\"label\" must be one of entailment/contradiction/neutral")]
    [InlineData("boolq", "[1,2]\n", "item 1: expected a JSON object")]
    [InlineData("rte", "", "no labelled rte examples")]
    public void MalformedTaskFilesGiveClearErrors(string task, string content, string expected)
    {
        using var dir = new TempDir();
        string path = dir.File(task + ".jsonl");
        File.WriteAllText(path, content);
        var e = Assert.Throws<InputException>(() => TaskLoader.ReadFile(task, path));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        output.WriteLine(e.Message);
    }

    [Fact]
    public void MalformedTsvAndUnknownTasksGiveClearErrors()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("dev.tsv"), "index\tquestion\tsentence\tlabel\n0\tq\ts\tmaybe\n");
        Assert.Contains("line 2: label \"maybe\"", Assert.Throws<InputException>(() => TaskLoader.ReadFile("qnli", dir.File("dev.tsv"))).Message);
        File.WriteAllText(dir.File("dev.tsv"), "index\tsentence1\tlabel\n");
        Assert.Contains("no column question", Assert.Throws<InputException>(() => TaskLoader.ReadFile("qnli", dir.File("dev.tsv"))).Message);
        Assert.Throws<ArgumentException>(() => TaskLoader.Canonical("squad"));
        Assert.Throws<InputException>(() => TaskLoader.Load("copa", dir.File("nothing-here")));
    }

    [Fact]
    public void MetricsAreExactMatchAccuracyAndMacroF1()
    {
        TaskExample Ex(string label) => new("cb", "p", label);
        var predictions = new[]
        {
            new Prediction(Ex("entailment"), " entailment ", "entailment"),
            new Prediction(Ex("entailment"), "neutral", "entailment"),
            new Prediction(Ex("neutral"), "neutral\n", "contradiction"),
            new Prediction(Ex("contradiction"), "entailment.", "contradiction"),
        };
        var m = TaskEvaluator.Score("cb", predictions, TaskPrompts.Nli3Labels);
        Assert.Equal(0.5, m.Accuracy);
        // entailment: tp 1, fp 0, fn 1 → 2/3 ("entailment." is no match); neutral: tp 1, fp 1, fn 0 → 2/3; contradiction: 0.
        Assert.Equal((2.0 / 3 + 2.0 / 3 + 0) / 3, m.MacroF1, 1e-12);
        Assert.Equal(0.75, m.LabelLikelihoodAccuracy);
        var (low, high) = Descriptive.Wilson(50, 100);
        Assert.Equal(0.4038, low, 3e-4);
        Assert.Equal(0.5962, high, 3e-4);
    }
}
