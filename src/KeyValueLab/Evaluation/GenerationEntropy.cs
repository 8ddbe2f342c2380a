using System.Text.RegularExpressions;

namespace KeyValueLab.Evaluation;

/// <summary>
/// ROME's fluency measure (SPEC §3): for a text, (H₂ + 2·H₃)/3 where Hₙ is the base-2 entropy of the
/// frequencies of its word n-grams (ROME: weights 2/3 and 4/3, arithmetic mean). Words are runs of letters
/// and digits (with an inner apostrophe) and single punctuation marks, close to NLTK's word_tokenize.
/// </summary>
public static partial class GenerationEntropy
{
    [GeneratedRegex(@"\w+(?:'\w+)?|[^\w\s]", RegexOptions.CultureInvariant)]
    private static partial Regex Word();

    public static double Of(string text)
    {
        var words = Word().Matches(text).Select(m => m.Value).ToArray();
        return (NGramEntropy(words, 2) + 2 * NGramEntropy(words, 3)) / 3;
    }

    /// <summary>Base-2 entropy of the n-gram frequency distribution (0 when there are no n-grams).</summary>
    public static double NGramEntropy(IReadOnlyList<string> words, int n)
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i + n <= words.Count; i++)
        {
            string key = string.Join('\u0001', words.Skip(i).Take(n));
            counts[key] = counts.GetValueOrDefault(key) + 1;
        }
        double total = counts.Values.Sum();
        return counts.Values.Sum(c => { double p = c / total; return -p * Math.Log2(p); });
    }
}
