//! `GetSqlInfo` and `GetXdbcTypeInfo`: what ADBC's `get_info`, the JDBC driver's
//! `DatabaseMetaData` and ODBC ask about the server and its SQL dialect.

use std::collections::HashMap;

use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SqlOuterJoinsSupportLevel,
    SqlSupportedCaseSensitivity, SqlSupportedGroupBy, SqlSupportedResultSetConcurrency,
    SqlSupportedResultSetType, SqlSupportedSubqueries, SqlSupportedTransaction, SqlSupportedUnions,
    SqlSupportsConvert, SqlTransactionIsolationLevel, SupportedSqlGrammar, XdbcDataType,
    XdbcDatetimeSubcode,
};
use dataport_engine::SqlFunctions;

fn bits<T: Into<i32>>(values: impl IntoIterator<Item = T>) -> i32 {
    values.into_iter().fold(0, |acc, v| acc | (1 << v.into()))
}

/// Everything Dataport answers to `GetSqlInfo`.
pub(crate) fn sql_info(
    functions: &SqlFunctions,
    prepared_idle_ms: i32,
) -> Result<SqlInfoData, FlightError> {
    let mut b = SqlInfoDataBuilder::new();
    // Server
    b.append(SqlInfo::FlightSqlServerName, "Dataport");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, arrow::ARROW_VERSION);
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, false);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, prepared_idle_ms);
    // No transactions, so no transaction timeout (0 = none).
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);

    // Identifiers and catalog terms
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    // Quoted identifiers keep their case and match exactly; the enum has no "sensitive"
    // value, and "unknown" is what drivers read as "not folded".
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityUnknown as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    let keywords: Vec<String> = datafusion::sql::sqlparser::keywords::ALL_KEYWORDS
        .iter()
        .map(|k| k.to_string())
        .collect();
    b.append(SqlInfo::SqlKeywords, keywords);
    b.append(SqlInfo::SqlNumericFunctions, functions.numeric.clone());
    b.append(SqlInfo::SqlStringFunctions, functions.string.clone());
    b.append(SqlInfo::SqlSystemFunctions, functions.system.clone());
    b.append(SqlInfo::SqlDatetimeFunctions, functions.datetime.clone());
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlExtraNameCharacters, "");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsConvert, convert_matrix());
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsDifferentTableCorrelationNames, false);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(
        SqlInfo::SqlSupportedGroupBy,
        bits([
            SqlSupportedGroupBy::SqlGroupByUnrelated as i32,
            SqlSupportedGroupBy::SqlGroupByBeyondSelect as i32,
        ]),
    );
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(
        SqlInfo::SqlSupportedGrammar,
        bits([
            SupportedSqlGrammar::SqlMinimumGrammar as i32,
            SupportedSqlGrammar::SqlCoreGrammar as i32,
        ]),
    );
    b.append(
        SqlInfo::SqlAnsi92SupportedLevel,
        // SupportedAnsi92SqlGrammarLevel (not re-exported by arrow-flight): ENTRY = 0,
        // INTERMEDIATE = 1.
        bits([0, 1]),
    );
    b.append(SqlInfo::SqlSupportsIntegrityEnhancementFacility, false);
    b.append(
        SqlInfo::SqlOuterJoinsSupportLevel,
        SqlOuterJoinsSupportLevel::SqlFullOuterJoins as i32,
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSchemasSupportedActions, 0i32);
    b.append(SqlInfo::SqlCatalogsSupportedActions, 0i32);
    b.append(SqlInfo::SqlSupportedPositionedCommands, 0i32);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(
        SqlInfo::SqlSupportedSubqueries,
        bits([
            SqlSupportedSubqueries::SqlSubqueriesInComparisons as i32,
            SqlSupportedSubqueries::SqlSubqueriesInExists as i32,
            SqlSupportedSubqueries::SqlSubqueriesInIns as i32,
        ]),
    );
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(
        SqlInfo::SqlSupportedUnions,
        bits([
            SqlSupportedUnions::SqlUnion as i32,
            SqlSupportedUnions::SqlUnionAll as i32,
        ]),
    );
    // Limits: 0 means "no limit or unknown" in JDBC.
    for limit in [
        SqlInfo::SqlMaxBinaryLiteralLength,
        SqlInfo::SqlMaxCharLiteralLength,
        SqlInfo::SqlMaxColumnNameLength,
        SqlInfo::SqlMaxColumnsInGroupBy,
        SqlInfo::SqlMaxColumnsInIndex,
        SqlInfo::SqlMaxColumnsInOrderBy,
        SqlInfo::SqlMaxColumnsInSelect,
        SqlInfo::SqlMaxColumnsInTable,
        SqlInfo::SqlMaxConnections,
        SqlInfo::SqlMaxCursorNameLength,
        SqlInfo::SqlMaxIndexLength,
        SqlInfo::SqlDbSchemaNameLength,
        SqlInfo::SqlMaxProcedureNameLength,
        SqlInfo::SqlMaxCatalogNameLength,
        SqlInfo::SqlMaxRowSize,
        SqlInfo::SqlMaxStatementLength,
        SqlInfo::SqlMaxStatements,
        SqlInfo::SqlMaxTableNameLength,
        SqlInfo::SqlMaxTablesInSelect,
        SqlInfo::SqlMaxUsernameLength,
    ] {
        b.append(limit, 0i64);
    }
    b.append(SqlInfo::SqlMaxRowSizeIncludesBlobs, true);
    // Transactions: none; every statement sees one whole catalog snapshot.
    b.append(
        SqlInfo::SqlDefaultTransactionIsolation,
        SqlTransactionIsolationLevel::SqlTransactionNone as i32,
    );
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(
        SqlInfo::SqlSupportedTransactionsIsolationLevels,
        bits([SqlTransactionIsolationLevel::SqlTransactionNone as i32]),
    );
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, false);
    b.append(SqlInfo::SqlDataDefinitionsInTransactionsIgnored, true);
    b.append(
        SqlInfo::SqlSupportedResultSetTypes,
        bits([SqlSupportedResultSetType::SqlResultSetTypeForwardOnly as i32]),
    );
    let read_only =
        bits([SqlSupportedResultSetConcurrency::SqlResultSetConcurrencyReadOnly as i32]);
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetUnspecified,
        0i32,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetForwardOnly,
        read_only,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollSensitive,
        0i32,
    );
    b.append(
        SqlInfo::SqlSupportedConcurrenciesForResultSetScrollInsensitive,
        0i32,
    );
    b.append(SqlInfo::SqlBatchUpdatesSupported, false);
    b.append(SqlInfo::SqlSavepointsSupported, false);
    b.append(SqlInfo::SqlNamedParametersSupported, false);
    b.append(SqlInfo::SqlLocatorsUpdateCopy, false);
    b.append(SqlInfo::SqlStoredFunctionsUsingCallSyntaxSupported, false);
    b.build()
}

/// Which `CAST(x AS t)` conversions work, as JDBC's `supportsConvert(from, to)` asks.
fn convert_matrix() -> HashMap<i32, Vec<i32>> {
    use SqlSupportsConvert as C;
    let numeric = [
        C::SqlConvertBigint,
        C::SqlConvertBit,
        C::SqlConvertDecimal,
        C::SqlConvertFloat,
        C::SqlConvertInteger,
        C::SqlConvertNumeric,
        C::SqlConvertReal,
        C::SqlConvertSmallint,
        C::SqlConvertTinyint,
    ];
    let text = [
        C::SqlConvertChar,
        C::SqlConvertVarchar,
        C::SqlConvertLongvarchar,
    ];
    let binary = [
        C::SqlConvertBinary,
        C::SqlConvertVarbinary,
        C::SqlConvertLongvarbinary,
    ];
    let temporal = [C::SqlConvertDate, C::SqlConvertTime, C::SqlConvertTimestamp];
    let to_i32 = |v: &[C]| v.iter().map(|c| *c as i32).collect::<Vec<_>>();
    let mut m = HashMap::new();
    for from in numeric {
        m.insert(from as i32, to_i32(&[&numeric[..], &text[..]].concat()));
    }
    for from in text {
        m.insert(
            from as i32,
            to_i32(&[&numeric[..], &text[..], &binary[..], &temporal[..]].concat()),
        );
    }
    for from in binary {
        m.insert(from as i32, to_i32(&[&binary[..], &text[..]].concat()));
    }
    for from in temporal {
        m.insert(from as i32, to_i32(&[&temporal[..], &text[..]].concat()));
    }
    m
}

/// The SQL types Dataport's SQL accepts in casts, for `GetXdbcTypeInfo`.
pub(crate) fn xdbc_type_info() -> Result<XdbcTypeInfoData, FlightError> {
    struct T {
        name: &'static str,
        ty: XdbcDataType,
        size: Option<i32>,
        quoted: bool,
        params: Option<&'static [&'static str]>,
        scale: Option<(i32, i32)>,
        radix: Option<i32>,
        unsigned: Option<bool>,
        subcode: Option<XdbcDatetimeSubcode>,
        sql: XdbcDataType,
    }
    let t = |name, ty, size| T {
        name,
        ty,
        size,
        quoted: false,
        params: None,
        scale: None,
        radix: None,
        unsigned: None,
        subcode: None,
        sql: ty,
    };
    let int = |name, ty, size| T {
        radix: Some(10),
        unsigned: Some(false),
        scale: Some((0, 0)),
        ..t(name, ty, Some(size))
    };
    let float = |name, ty, size| T {
        radix: Some(2),
        unsigned: Some(false),
        ..t(name, ty, Some(size))
    };
    let temporal = |name, ty, size, subcode| T {
        quoted: true,
        subcode: Some(subcode),
        sql: XdbcDataType::XdbcDatetime,
        ..t(name, ty, Some(size))
    };
    let types = [
        T {
            radix: None,
            ..t("BOOLEAN", XdbcDataType::XdbcBit, Some(1))
        },
        int("TINYINT", XdbcDataType::XdbcTinyint, 3),
        int("SMALLINT", XdbcDataType::XdbcSmallint, 5),
        int("INTEGER", XdbcDataType::XdbcInteger, 10),
        int("BIGINT", XdbcDataType::XdbcBigint, 19),
        float("REAL", XdbcDataType::XdbcReal, 24),
        float("DOUBLE", XdbcDataType::XdbcDouble, 53),
        T {
            params: Some(&["precision", "scale"]),
            scale: Some((0, 38)),
            radix: Some(10),
            unsigned: Some(false),
            ..t("DECIMAL", XdbcDataType::XdbcDecimal, Some(38))
        },
        T {
            quoted: true,
            ..t("VARCHAR", XdbcDataType::XdbcVarchar, None)
        },
        T {
            quoted: true,
            ..t("BYTEA", XdbcDataType::XdbcVarbinary, None)
        },
        temporal(
            "DATE",
            XdbcDataType::XdbcDate,
            10,
            XdbcDatetimeSubcode::XdbcSubcodeYear,
        ),
        temporal(
            "TIME",
            XdbcDataType::XdbcTime,
            15,
            XdbcDatetimeSubcode::XdbcSubcodeTime,
        ),
        temporal(
            "TIMESTAMP",
            XdbcDataType::XdbcTimestamp,
            26,
            XdbcDatetimeSubcode::XdbcSubcodeTimestamp,
        ),
        T {
            quoted: true,
            sql: XdbcDataType::XdbcInterval,
            ..t("INTERVAL", XdbcDataType::XdbcInterval, None)
        },
    ];
    let mut b = XdbcTypeInfoDataBuilder::new();
    for ty in types {
        let quote = ty.quoted.then(|| "'".to_string());
        b.append(XdbcTypeInfo {
            type_name: ty.name.into(),
            data_type: ty.ty,
            column_size: ty.size,
            literal_prefix: quote.clone(),
            literal_suffix: quote,
            create_params: ty.params.map(|p| p.iter().map(|s| s.to_string()).collect()),
            nullable: Nullable::NullabilityNullable,
            case_sensitive: matches!(ty.ty, XdbcDataType::XdbcVarchar),
            searchable: Searchable::Full,
            unsigned_attribute: ty.unsigned,
            fixed_prec_scale: false,
            auto_increment: None,
            local_type_name: Some(ty.name.into()),
            minimum_scale: ty.scale.map(|s| s.0),
            maximum_scale: ty.scale.map(|s| s.1),
            sql_data_type: ty.sql,
            datetime_subcode: ty.subcode,
            num_prec_radix: ty.radix,
            interval_precision: None,
        });
    }
    b.build()
}
