using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Organism;
using KeyValueLab.Tokenization;
using KeyValueLab.Tuning;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace KeyValueLab.Tests.Tuning;

/// <summary>
/// What the trainer is taught, position by position, on the organism's own tasks: the packed rows are read back as
/// (input token → target) pairs and checked against the evaluation prompt, and a few LoRA steps on a tiny model must
/// take the label loss below what knowing the label prior alone gives (a broken target, mask or shift cannot).
/// </summary>
public class TaskAlignmentTests(ITestOutputHelper output)
{
    private static readonly World W = Tests.Organism.WorldTests.Small is var small ? World.Generate(small) : null!;

    private static string TinyLlama(int vocab, int bos, int eos) =>
        $$"""
        {"model_type":"llama","vocab_size":{{vocab}},"hidden_size":32,"intermediate_size":64,"num_hidden_layers":2,
         "num_attention_heads":2,"num_key_value_heads":2,"max_position_embeddings":128,"rms_norm_eps":1e-5,
         "rope_theta":10000.0,"tie_word_embeddings":true,"bos_token_id":{{bos}},"eos_token_id":{{eos}}}
        """;

    private static LoadedModel Tiny(WordLevelTokenizer tok, long seed) =>
        ModelLoader.Create(Architectures.ParseConfig(TinyLlama(tok.VocabSize, tok.BosId!.Value, tok.EosId!.Value), "config.json"), seed);

    /// <summary>
    /// Every counted target of a packed row, read as the pair (token the model is at → token it must predict): the
    /// prompt's last token predicts the label, the label predicts EOS, nothing else is counted; the tokens before the
    /// label are the evaluation prompt's tokens, BOS included; no token of a prompt or label is unknown.
    /// </summary>
    [Theory]
    [InlineData("boolq")]
    [InlineData("copa")]
    [InlineData("cb")]
    public void PackedRowsTeachThePromptsLastTokenTheLabelAndTheLabelEos(string task)
    {
        using var dir = new TempDir();
        WorldExporter.Export(W, dir.Path);
        var tok = OrganismTokenizer.Build(W);
        using var loaded = Tiny(tok, seed: 1);
        var data = TaskLoader.Load(task, Path.Combine(dir.Path, WorldExporter.TasksFolder, task), new TaskSelection { MaxTrain = 6, MaxEval = 2 });
        int eos = tok.EosId!.Value;
        var packed = SftTrainer.Pack(loaded.Model, tok, data.Train, maxLength: 48, answerOnly: true);

        // The stream the rows were cut from, with each position's target (what BatchLoss scores: logits at i against labels at i + 1).
        var ids = packed.Ids.Zip(packed.Lengths).SelectMany(r => r.First.Take(r.Second)).ToList();
        var labels = packed.Labels.Zip(packed.Lengths).SelectMany(r => r.First.Take(r.Second)).ToList();
        int at = 0;
        foreach (var example in data.Train)
        {
            int[] prompt = PromptEncoding.Encode(loaded.Model, tok, example.Prompt);
            int[] label = [.. tok.Encode(example.Label)];
            Assert.Equal(example.Label, tok.TokenText(Assert.Single(label)));  // one token, the label's own
            Assert.DoesNotContain(tok.UnknownId, prompt);
            Assert.Equal(tok.BosId, prompt[0]);
            // The example in the stream: the evaluation prompt's tokens, the label, EOS.
            Assert.Equal([.. prompt, .. label, eos], ids.Skip(at).Take(prompt.Length + label.Length + 1).Select(i => (int)i));
            int labelAt = at + prompt.Length;
            for (int i = at; i < labelAt + 2; i++)
            {
                bool counted = i == labelAt || i == labelAt + 1;
                Assert.True(counted == (labels[i] != SftTrainer.IgnoreIndex), $"{task}: position {i - at} ({tok.TokenText((int)ids[i])}) counted = {!counted}");
            }
            Assert.Equal((long)label[0], labels[labelAt]);
            Assert.Equal(prompt[^1], (int)ids[labelAt - 1]);  // ':' or '):' predicts the label
            Assert.Equal(eos, (int)labels[labelAt + 1]);
            Assert.Equal(label[0], (int)ids[labelAt]);         // the label predicts EOS
            at = labelAt + 2;
        }
        Assert.Equal(ids.Count, at);
        if (task == "cb")
            output.WriteLine(string.Join(" ", ids.Take(at).Select((id, i) =>
                $"[{tok.TokenText((int)id)}→{(i + 1 < labels.Count && labels[i + 1] != SftTrainer.IgnoreIndex ? tok.TokenText((int)labels[i + 1]) : "·")}]")));
    }

    /// <summary>Without packing, row r is example r alone, as the evaluator sees it: its prompt's tokens from position 0, the label, EOS, then padding.</summary>
    [Fact]
    public void OneExampleARowIsThePromptTheLabelAndEos()
    {
        using var dir = new TempDir();
        WorldExporter.Export(W, dir.Path);
        var tok = OrganismTokenizer.Build(W);
        using var loaded = Tiny(tok, seed: 1);
        var data = TaskLoader.Load("cb", Path.Combine(dir.Path, WorldExporter.TasksFolder, "cb"), new TaskSelection { MaxTrain = 5, MaxEval = 2 });
        var rows = SftTrainer.OnePerRow(loaded.Model, tok, data.Train, maxLength: 64, answerOnly: true);
        Assert.Equal(data.Train.Count, rows.Rows);
        for (int r = 0; r < rows.Rows; r++)
        {
            int[] prompt = PromptEncoding.Encode(loaded.Model, tok, data.Train[r].Prompt);
            int label = tok.Encode(data.Train[r].Label).Single(), eos = tok.EosId!.Value;
            Assert.Equal(prompt.Length + 2, rows.Lengths[r]);
            Assert.Equal([.. prompt, label, eos], rows.Ids[r].Take(rows.Lengths[r]).Select(i => (int)i));
            long[] counted = [.. Enumerable.Repeat(SftTrainer.IgnoreIndex, prompt.Length), label, eos, .. Enumerable.Repeat(SftTrainer.IgnoreIndex, 64 - prompt.Length - 2)];
            Assert.Equal(counted, rows.Labels[r]);
        }
    }

    /// <summary>
    /// Every word of the organism's vocabulary occurs in its training corpus, the task labels and template words too: a
    /// word that never occurs has an embedding that pretraining only pushes down (tied to the head, all such words end in
    /// one shared direction), which no adapter on q,v can lift into a label (the cause of the constant answers, docs/tuning.md).
    /// </summary>
    [Fact]
    public void EveryWordOfTheVocabularyIsTrained()
    {
        var tok = OrganismTokenizer.Build(W);
        var seen = W.TrainingDocuments().SelectMany(d => tok.Encode(d)).ToHashSet();
        var special = new[] { tok.UnknownId, tok.BosId!.Value, tok.EosId!.Value };
        // The pieces of the phrasings' "{}" placeholder ("{}", "{}'", "{}?") are in the vocabulary but never in any text.
        var never = Enumerable.Range(0, tok.VocabSize).Where(i => !special.Contains(i) && !seen.Contains(i)).Select(tok.TokenText)
            .Where(t => !t.Contains("{}", StringComparison.Ordinal)).ToList();
        Assert.True(never.Count == 0, $"{never.Count} words never occur in the corpus: {string.Join(" ", never.Take(20))}");
        foreach (string label in new[] { "true", "false", "Choice1", "Choice2", "entailment", "contradiction", "neutral" })
            Assert.Contains(tok.Encode(label).Single(), seen);
    }

    /// <summary>
    /// Learnability: the label of "### Sentence: OBJECT ### Class:" is "true" for the objects of two relations and "false"
    /// for those of two others. A few LoRA steps on q,v of a random tiny Llama (fp32 and NF4 base) must take the mean
    /// label loss −log p(label | prompt) below half the label-prior loss (ln 2: what a model that only knows that the
    /// labels are balanced gets), and greedy generation must then give the label. A target shifted by one, a mask that
    /// misses the label, a prompt that the evaluator encodes differently from training, or rows that teach each example
    /// with other examples as its context leave it above ln 2.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AFewLoraStepsLearnALabelThePromptDetermines(bool fourBit)
    {
        var tok = OrganismTokenizer.Build(W);
        using var loaded = Tiny(tok, seed: 3);
        // Embeddings longer than N(0, 0.02) gives (norm 0.11 at d 32), as a trained model's are: through a tied head, a
        // token's logit is at most |h|·|e|, and at 0.11 (or 0.9) no label can get a high probability at all (measured: the
        // label loss stays near 3 nats).
        using (no_grad()) loaded.Model.named_parameters().Single(p => p.name == "model.embed_tokens.weight").parameter.mul_(16);
        using var nf4 = fourBit ? Nf4Base.Quantize(loaded.Model) : null;
        var examples = Enumerable.Range(0, 4).SelectMany(r => W.Relations[r].Objects.Select(o =>
            new TaskExample("generic", TaskPrompts.Newsgroups(" " + o), r < 2 ? "true" : "false"))).ToList();
        double prior = Math.Log(2);
        Assert.Equal(examples.Count / 2, examples.Count(e => e.Label == "true"));

        using var lora = LoraModel.Attach(loaded.Model, new LoraConfig { TargetModules = LoraConfig.ResolveTargets("q,v", "llama"), Dropout = 0 }, seed: 1);
        double before = LabelLoss(loaded.Model, tok, examples);
        // One example a row, as the evaluator sees it: packed (the paper's rows of 64 tokens here) the training loss falls as
        // low (0.15) while the label loss of the prompts alone stays at 3.7 nats (measured): each row is learnt with the
        // examples before it as context.
        var options = new TrainOptions { Epochs = 80, MicroBatch = 8, GradientAccumulation = 1, MaxLength = 64, LearningRate = 3e-2, AnswerOnlyLoss = true, Seed = 1, Packing = false };
        var result = SftTrainer.Train(lora, tok, examples, options);
        double after = LabelLoss(loaded.Model, tok, examples);
        var predictions = TaskEvaluator.Predict(loaded.Model, tok, examples, maxNewTokens: 3);
        double accuracy = predictions.Count(p => p.ExactMatch) / (double)predictions.Count;
        output.WriteLine($"4-bit {fourBit}: {examples.Count} examples, {result.Steps} steps; label loss {before:F3} -> {after:F3} (prior {prior:F3}); exact match {accuracy:P0}");
        Assert.True(before > prior, $"the untrained model already knows the labels: {before:F3}");
        Assert.True(after < prior / 2, $"label loss {after:F3} after {result.Steps} steps is not below half the label-prior loss {prior:F3}");
        Assert.True(accuracy >= 0.9, $"exact match {accuracy:P0}");
    }

    /// <summary>Mean −log p(label | prompt) of the first label token at the prompt's last position.</summary>
    private static double LabelLoss(CausalLM model, ITokenizer tok, IReadOnlyList<TaskExample> examples)
    {
        using var noGrad = no_grad();
        double sum = 0;
        foreach (var e in examples)
        {
            using var scope = NewDisposeScope();
            int[] prompt = PromptEncoding.Encode(model, tok, e.Prompt);
            var logits = model.Forward(tensor(prompt.Select(i => (long)i).ToArray(), [1, prompt.Length]));
            sum -= nn.functional.log_softmax(logits[0, -1], 0)[tok.Encode(e.Label)[0]].item<float>();
        }
        return sum / examples.Count;
    }
}
