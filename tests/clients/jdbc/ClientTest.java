// Real-client acceptance check with the PostgreSQL JDBC driver: connect, parameters (server-side prepared once
// prepareThreshold is reached), transactions, an error, then print OK.
//
// usage: java -cp /usr/share/java/postgresql.jar:CLASSES ClientTest HOST PORT USER PASSWORD DBNAME [prepareThreshold]

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Properties;

public final class ClientTest {
    private static void check(boolean condition, String what) {
        if (!condition) {
            throw new IllegalStateException("check failed: " + what);
        }
    }

    private static long countEvents(Connection conn, long id) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement("SELECT count(*) FROM client_events WHERE id = ?")) {
            ps.setLong(1, id);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getLong(1);
            }
        }
    }

    private static long insertEvent(Connection conn, String note) throws SQLException {
        try (PreparedStatement ps = conn.prepareStatement(
                "INSERT INTO client_events (client, note) VALUES (?, ?) RETURNING id")) {
            ps.setString(1, "jdbc");
            ps.setString(2, note);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getLong(1);
            }
        }
    }

    private static void run(String url, Properties props) throws SQLException {
        try (Connection conn = DriverManager.getConnection(url, props)) {
            // Several executions of one PreparedStatement cross prepareThreshold, switching to a named statement.
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT id, name FROM products WHERE tenant_id = ? AND deleted_at IS NULL ORDER BY id LIMIT ?")) {
                for (int i = 0; i < 6; i++) {
                    ps.setLong(1, 1);
                    ps.setInt(2, 5);
                    int rows = 0;
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            rows++;
                        }
                    }
                    check(rows == 5, "products rows: " + rows);
                }
            }
            try (PreparedStatement ps = conn.prepareStatement("SELECT ?::int + ?::int, ?::text")) {
                ps.setInt(1, 1);
                ps.setInt(2, 2);
                ps.setString(3, "héllo 'quoted'");
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next() && rs.getInt(1) == 3 && "héllo 'quoted'".equals(rs.getString(2)), "params");
                }
            }

            // Rolled-back transaction leaves no row; committed one does.
            conn.setAutoCommit(false);
            long rolledBack = insertEvent(conn, "rolled back");
            check(countEvents(conn, rolledBack) == 1, "row visible inside its transaction");
            conn.rollback();
            check(countEvents(conn, rolledBack) == 0, "rolled-back row is gone");
            long committed = insertEvent(conn, "committed");
            conn.commit();
            check(countEvents(conn, committed) == 1, "committed row is visible");
            try (Statement st = conn.createStatement()) {
                st.executeUpdate("DELETE FROM client_events WHERE id = " + committed);
            }
            conn.commit();
            conn.setAutoCommit(true);

            // An error reaches the client with its SQLSTATE and the connection stays usable.
            try (Statement st = conn.createStatement()) {
                st.executeQuery("SELECT 1/0");
                throw new IllegalStateException("SELECT 1/0 did not fail");
            } catch (SQLException e) {
                check("22012".equals(e.getSQLState()), "SQLSTATE " + e.getSQLState());
            }
            try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery("SELECT 1")) {
                check(rs.next() && rs.getInt(1) == 1, "connection works after an error");
            }
        }
    }

    public static void main(String[] args) {
        if (args.length < 5) {
            System.out.println("usage: ClientTest HOST PORT USER PASSWORD DBNAME [prepareThreshold]");
            System.exit(2);
        }
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/" + args[4];
        Properties props = new Properties();
        props.setProperty("user", args[2]);
        props.setProperty("password", args[3]);
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "30");
        if (args.length > 5) {
            props.setProperty("prepareThreshold", args[5]);
        }
        try {
            run(url, props);
        } catch (Exception e) {
            String state = e instanceof SQLException ? ((SQLException) e).getSQLState() + " " : "";
            System.out.println("FAIL: " + state + e);
            System.exit(1);
        }
        System.out.println("OK");
    }
}
