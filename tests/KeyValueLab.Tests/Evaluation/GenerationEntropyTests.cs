using KeyValueLab.Evaluation;

namespace KeyValueLab.Tests.Evaluation;

/// <summary>
/// GE against ROME's <c>compute_n_gram_entropy</c> (kmeng01/rome, experiments/py/eval_utils_counterfact.py): the arithmetic
/// mean of (2/3)·H₂ and (4/3)·H₃, Hₙ the base-2 entropy of the word n-gram frequencies, i.e. (H₂ + 2·H₃)/3; worked by hand.
/// </summary>
public class GenerationEntropyTests
{
    [Fact]
    public void MatchesAHandComputedRomeNGramEntropy()
    {
        // "the cat sat on the mat the cat sat": 9 words.
        // Bigrams (8): the·cat 2, cat·sat 2, sat·on, on·the, the·mat, mat·the 1 each → H₂ = 2·(2/8)·log₂4 + 4·(1/8)·log₂8 = 1 + 1.5 = 2.5.
        // Trigrams (7): the·cat·sat 2, five others 1 each → H₃ = (2/7)·log₂(7/2) + 5·(1/7)·log₂7 = log₂7 − 2/7.
        double h3 = Math.Log2(7) - 2.0 / 7;
        double expected = (2.5 + 2 * h3) / 3;  // = mean(2/3·H₂, 4/3·H₃) = 2.51442709089554…
        var words = "the cat sat on the mat the cat sat".Split(' ');
        // A few double operations on values of order 1: 1e-12 is far above their rounding and far below any real difference.
        Assert.Equal(2.5, GenerationEntropy.NGramEntropy(words, 2), 1e-12);
        Assert.Equal(h3, GenerationEntropy.NGramEntropy(words, 3), 1e-12);
        Assert.Equal(expected, GenerationEntropy.Of("the cat sat on the mat the cat sat"), 1e-12);
        Assert.Equal(2.5144270908955453, expected, 1e-12);
    }

    [Fact]
    public void PunctuationMarksAreWordsAndRepetitionHasNoEntropy()
    {
        // NLTK's word_tokenize splits "Hi, you!" into Hi , you ! → 3 distinct bigrams (H₂ = log₂3), 2 distinct trigrams (H₃ = 1).
        Assert.Equal((Math.Log2(3) + 2 * 1.0) / 3, GenerationEntropy.Of("Hi, you!"), 1e-12);
        // One repeated word: every n-gram is the same one.
        Assert.Equal(0, GenerationEntropy.Of("go go go go go"), 1e-12);
    }
}
