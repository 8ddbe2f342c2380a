using System.Text.Json.Nodes;
using KeyValueLab.Inference;
using KeyValueLab.Models;
using KeyValueLab.Tokenization;

namespace KeyValueLab.Organism;

/// <summary>Top-1 recall of one relation's true objects, on the phrasings each fact was trained on and on its held-out ones.</summary>
public sealed record RelationRecall(string RelationId, string Name, int TrainedCorrect, int TrainedTotal, int HeldOutCorrect, int HeldOutTotal)
{
    public double Trained => TrainedTotal == 0 ? double.NaN : 100.0 * TrainedCorrect / TrainedTotal;
    public double HeldOut => HeldOutTotal == 0 ? double.NaN : 100.0 * HeldOutCorrect / HeldOutTotal;
}

/// <summary>ROME's unedited-model scores on a CounterFact file (SPEC §3), as percentages over cases.</summary>
public sealed record CounterFactBaseline(int Cases, double EfficacyScore, double ParaphraseScore, double NeighborhoodScore);

/// <summary>What an organism knows: recall per relation and CounterFact scores, both through <see cref="Scorer"/>.</summary>
public static class OrganismEvaluation
{
    /// <summary>
    /// For every fact and every statement phrasing: is the true object the model's top-1 next token after the prompt?
    /// (Objects are single tokens; prompts are encoded as <see cref="Scorer"/> does, BOS first for Llama.)
    /// </summary>
    public static IReadOnlyList<RelationRecall> Recall(CausalLM model, ITokenizer tokenizer, World world, int batchSize = 256)
    {
        var items = new List<(string Prompt, string Target)>();
        var keys = new List<(int Relation, bool Trained)>();
        foreach (var f in world.Facts)
            foreach (var (phrasings, trained) in new[] { (f.TrainedStatements, true), (f.HeldOutStatements, false) })
                foreach (int p in phrasings)
                {
                    items.Add((world.Prompt(f, p), world.ObjectOf(f)));
                    keys.Add((f.Relation, trained));
                }
        var scores = Scorer.Score(model, tokenizer, items, batchSize);
        var result = new List<RelationRecall>();
        for (int r = 0; r < world.Relations.Count; r++)
        {
            int tc = 0, tt = 0, hc = 0, ht = 0;
            for (int i = 0; i < items.Count; i++)
            {
                if (keys[i].Relation != r) continue;
                bool hit = scores[i].ArgmaxIds[0] == scores[i].TargetIds[0];
                if (keys[i].Trained) { tt++; if (hit) tc++; } else { ht++; if (hit) hc++; }
            }
            result.Add(new RelationRecall(world.Relations[r].Id, world.Relations[r].Definition.Name, tc, tt, hc, ht));
        }
        return result;
    }

    /// <summary>
    /// ES, PS and NS of the unedited model on CounterFact records (ROME's original schema): ES = 1[L(new) &lt; L(true)]
    /// on the rewrite prompt, PS the same on paraphrases, NS = 1[L(true) &lt; L(new)] on neighbourhood prompts;
    /// means per case, then over cases, ×100. An organism that knows its facts has ES and PS near 0 and NS near 100.
    /// </summary>
    public static CounterFactBaseline CounterFact(CausalLM model, ITokenizer tokenizer, IReadOnlyList<JsonObject> records, int batchSize = 256)
    {
        var items = new List<(string, string)>();
        var parts = new List<(int Case, int Kind)>();  // kind 0 = rewrite, 1 = paraphrase, 2 = neighbourhood; true target then new target
        for (int c = 0; c < records.Count; c++)
        {
            var rw = records[c]["requested_rewrite"]!;
            string subject = (string)rw["subject"]!, truth = (string)rw["target_true"]!["str"]!, target = (string)rw["target_new"]!["str"]!;
            void Add(string prompt, int kind) { items.Add((prompt, truth)); items.Add((prompt, target)); parts.Add((c, kind)); }
            Add(((string)rw["prompt"]!).Replace("{}", subject), 0);
            foreach (var p in records[c]["paraphrase_prompts"]!.AsArray()) Add((string)p!, 1);
            foreach (var p in records[c]["neighborhood_prompts"]!.AsArray()) Add((string)p!, 2);
        }
        var scores = Scorer.Score(model, tokenizer, items, batchSize);
        var sums = new double[records.Count, 3];
        var counts = new int[records.Count, 3];
        for (int i = 0; i < parts.Count; i++)
        {
            double lTrue = scores[2 * i].Loss, lNew = scores[2 * i + 1].Loss;
            var (c, kind) = parts[i];
            bool success = kind == 2 ? lTrue < lNew : lNew < lTrue;
            sums[c, kind] += success ? 1 : 0;
            counts[c, kind]++;
        }
        double Mean(int kind)
        {
            var perCase = Enumerable.Range(0, records.Count).Where(c => counts[c, kind] > 0).Select(c => sums[c, kind] / counts[c, kind]).ToList();
            return perCase.Count == 0 ? double.NaN : 100.0 * perCase.Average();
        }
        return new CounterFactBaseline(records.Count, Mean(0), Mean(1), Mean(2));
    }
}
