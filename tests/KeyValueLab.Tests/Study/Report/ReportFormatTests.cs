using KeyValueLab.Study.Report;

namespace KeyValueLab.Tests.Study.Report;

public class ReportFormatTests
{
    [Theory]
    [InlineData(0.0123456, "0.0123")]
    [InlineData(0.5, "0.500")]
    [InlineData(1.0, "1.00")]
    [InlineData(0.09996, "0.100")]
    [InlineData(0.00123, "0.00123")]
    [InlineData(0.0000123456, "1.23e-05")]
    public void PValuesHaveThreeSignificantDigits(double p, string expected) => Assert.Equal(expected, ReportFormat.P(p));

    [Theory]
    [InlineData(12.345, "12.3")]
    [InlineData(-0.04, "0.0")]
    [InlineData(-2.26, "−2.3")]
    public void ScoresHaveOneDecimal(double x, string expected) => Assert.Equal(expected, ReportFormat.Score(x));
}
