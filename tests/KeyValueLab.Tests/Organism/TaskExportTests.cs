using System.Text.Json.Nodes;
using KeyValueLab.Organism;

namespace KeyValueLab.Tests.Organism;

/// <summary>
/// The organism's classification tasks, checked against the world itself: every label is recomputed from the facts
/// (which sentence states which fact is found by matching every phrasing and object of the world), labels are balanced
/// in every split, and the evaluation splits ask about facts the training split never does.
/// </summary>
public class TaskExportTests
{
    private static readonly World W = World.Generate(WorldTests.Small with { TaskTrainExamples = 60, TaskEvalExamples = 12 });

    /// <summary>The (subject, relation, object) a sentence "…{prompt} {object}." states, found by trying every phrasing.</summary>
    private static (int Subject, int Relation, int Object) Parse(string sentence)
    {
        var found = new List<(int, int, int)>();
        for (int s = 0; s < W.Subjects.Count; s++)
            for (int r = 0; r < W.Relations.Count; r++)
                foreach (string statement in W.Relations[r].Definition.Statements)
                    for (int o = 0; o < W.Relations[r].Objects.Length; o++)
                        if (sentence == $"{World.Fill(statement, W.Subjects[s])} {W.Relations[r].Objects[o]}.") found.Add((s, r, o));
        return Assert.Single(found);
    }

    private static (int Subject, int Relation, int Object) ParseQuestion(string question)
    {
        var found = new List<(int, int, int)>();
        for (int s = 0; s < W.Subjects.Count; s++)
            for (int r = 0; r < W.Relations.Count; r++)
                for (int o = 0; o < W.Relations[r].Objects.Length; o++)
                    if (question == W.Relations[r].Definition.YesNoQuestion.Replace("{s}", W.Subjects[s]).Replace("{o}", W.Relations[r].Objects[o])) found.Add((s, r, o));
        return Assert.Single(found);
    }

    private static bool IsTrue((int Subject, int Relation, int Object) claim) => W.FactOf(claim.Subject, claim.Relation).Object == claim.Object;

    /// <summary>Rows of a task as the export writes them: train, then validation, then test.</summary>
    private static (List<JsonObject> Train, List<JsonObject> Val, List<JsonObject> Test) Splits(List<JsonObject> rows)
    {
        int train = W.Config.TaskTrainExamples, eval = W.Config.TaskEvalExamples;
        Assert.Equal(train + 2 * eval, rows.Count);
        return (rows[..train], rows[train..(train + eval)], rows[(train + eval)..]);
    }

    private static void Balanced<T>(IEnumerable<JsonObject> rows, Func<JsonObject, T> label, int labels)
    {
        var counts = rows.GroupBy(label).Select(g => g.Count()).ToList();
        Assert.Equal(labels, counts.Count);
        Assert.True(counts.Max() - counts.Min() <= 1, string.Join(", ", counts));
    }

    private static void EvaluationFactsAreNotTrainingFacts(List<JsonObject> rows, Func<JsonObject, (int Subject, int Relation)> fact)
    {
        var (train, val, test) = Splits(rows);
        var trained = train.Select(fact).ToHashSet();
        Assert.DoesNotContain(val.Concat(test).Select(fact), trained.Contains);
    }

    [Fact]
    public void EveryTaskPromptTokenisesWithoutUnknownWords()
    {
        // The tuner reads the rows through the paper's templates; "Relationship" and "):" of the CB template were once unknown.
        using var dir = new TempDir();
        WorldExporter.Export(W, dir.Path);
        var tokenizer = OrganismTokenizer.Build(W);
        foreach (string task in WorldExporter.Tasks)
        {
            var data = KeyValueLab.Tuning.TaskLoader.Load(task, Path.Combine(dir.Path, WorldExporter.TasksFolder, task));
            foreach (var example in data.Train.Take(20).Concat(data.Eval.Take(20)))
                Assert.DoesNotContain(tokenizer.UnknownId, tokenizer.Encode(example.TrainingText));
        }
    }

    [Fact]
    public void TrueFalseQuestionsAreLabelledByTheWorldsFacts()
    {
        var rows = WorldExporter.FactVerification(W);
        foreach (var row in rows)
        {
            var claim = ParseQuestion((string)row["question"]!);
            Assert.Equal(IsTrue(claim) ? "true" : "false", (string)row["label"]!);
            // The passage states the same claim in a phrasing the model was trained on for that fact.
            var passage = Parse((string)row["passage"]!);
            Assert.Equal(claim, passage);
            var fact = W.FactOf(claim.Subject, claim.Relation);
            Assert.Contains(fact.TrainedStatements, p => (string)row["passage"]! == $"{W.Prompt(fact, p)} {W.Relations[claim.Relation].Objects[claim.Object]}.");
        }
        var (train, val, test) = Splits(rows);
        foreach (var split in new[] { train, val, test }) Balanced(split, r => (string)r["label"]!, 2);
        EvaluationFactsAreNotTrainingFacts(rows, r => ParseQuestion((string)r["question"]!) is var c ? (c.Subject, c.Relation) : default);
    }

    [Fact]
    public void TheRightChoiceStatesTheTrueObject()
    {
        var rows = WorldExporter.TwoChoice(W);
        foreach (var row in rows)
        {
            var c1 = Parse((string)row["choice1"]!);
            var c2 = Parse((string)row["choice2"]!);
            Assert.Equal((c1.Subject, c1.Relation), (c2.Subject, c2.Relation));
            Assert.NotEqual(c1.Object, c2.Object);
            Assert.True(IsTrue(c1) ^ IsTrue(c2));
            Assert.Equal(IsTrue(c1) ? 0 : 1, (int)row["label"]!);
            Assert.Equal(W.Relations[c1.Relation].Definition.CausePremise.Replace("{s}", W.Subjects[c1.Subject]), (string)row["premise"]!);
        }
        var (train, val, test) = Splits(rows);
        foreach (var split in new[] { train, val, test }) Balanced(split, r => (int)r["label"]!, 2);
        EvaluationFactsAreNotTrainingFacts(rows, r => Parse((string)r["choice1"]!) is var c ? (c.Subject, c.Relation) : default);
    }

    [Fact]
    public void EntailmentLabelsFollowFromTheTwoStatedFacts()
    {
        var rows = WorldExporter.Entailment(W);
        foreach (var row in rows)
        {
            var premise = Parse((string)row["premise"]!);
            var hypothesis = Parse((string)row["hypothesis"]!);
            Assert.True(IsTrue(premise));  // premises never contradict the world
            Assert.Equal(premise.Subject, hypothesis.Subject);
            string expected = hypothesis.Relation != premise.Relation ? "neutral"
                : hypothesis.Object == premise.Object ? "entailment" : "contradiction";
            Assert.Equal(expected, (string)row["label"]!);
            if (expected == "entailment") Assert.NotEqual((string)row["premise"]!, (string)row["hypothesis"]!);  // another phrasing
        }
        var (train, val, test) = Splits(rows);
        foreach (var split in new[] { train, val, test }) Balanced(split, r => (string)r["label"]!, 3);
        EvaluationFactsAreNotTrainingFacts(rows, r => Parse((string)r["premise"]!) is var c ? (c.Subject, c.Relation) : default);
    }
}
